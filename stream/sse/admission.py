"""Admission and policing of open streams: who may open one, and when one must end.

It is the one place that sees every open stream, so it keeps their limits:

- **Caps.** `admit` refuses a stream over the server-wide cap or over the cap of
  the run token it was opened with (the API key is bounded by the server cap only).
- **Slow streams.** A stream whose socket stays unwritable is caught by the
  watchdog below (one that overflows its buffer ends itself: stream/sse/subscriber.py).
  Either way its client reconnects with `Last-Event-ID` and resumes from the log:
  a slow client never holds memory or slows anyone else.
- **Lifetime and shutdown.** A stream is closed with a last comment when it reaches
  its maximum age (or its run token expires), or when the server shuts down, so
  that its client reconnects (to another instance, behind a load balancer) instead
  of being cut off.

One watchdog task serves every stream (a task per stream would cost memory on
each of thousands of idle ones). Each response marks `writing_since` while its
bytes are being written: Hypercorn awaits the socket's drain inside the write, so
a client that stops reading leaves its stream's task blocked there. The
watchdog cancels such a task, which ends the response; the kernel's
`TCP_USER_TIMEOUT` (set by `steplog serve`) then frees the socket itself.

Time comes from the injected clock (functions/clock.py), so lifetimes and the
watchdog are tested on a fake one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from functions.clock import Clock
from stream.http.metrics import Metrics
from stream.sse.encoder import encode_comment
from stream.sse.subscriber import Subscriber

log = logging.getLogger("steplog.hub")

LIFETIME_JITTER = 0.1
"""Streams end up to this fraction before their maximum age, so that the streams of a
burst of clients (say, all those that reconnected after a deploy) do not all end, and
reconnect, in the same second again."""

SHUTDOWN = encode_comment("server shutting down, reconnect")
LIFETIME = encode_comment("stream lifetime reached, reconnect")


class StreamRefused(Exception):
    """A stream cannot open now; `reason` is `server_cap`, `token_cap` or `shutting_down`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Admission:
    """Opens streams within the caps, ends them at their lifetime, drops stuck ones."""

    def __init__(
        self,
        *,
        clock: Clock,
        metrics: Metrics,
        buffer: int,
        max_streams: int = 10_000,
        max_streams_per_token: int = 10,
        lifetime: float = 900.0,
        write_timeout: float = 30.0,
    ) -> None:
        self.clock = clock
        self.metrics = metrics
        self.buffer = buffer
        self.max_streams = max_streams
        self.max_streams_per_token = max_streams_per_token
        self.lifetime = lifetime
        self.write_timeout = write_timeout
        self.accepting = True
        self.dropped_slow = 0
        self._streams: set[Subscriber] = set()
        self._per_token: dict[str, int] = {}
        self._watchdog: asyncio.Task[None] | None = None
        metrics.track_open_streams(lambda: len(self._streams))

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def streams(self) -> frozenset[Subscriber]:
        return frozenset(self._streams)

    # -- opening and closing -----------------------------------------------------
    def admit(
        self,
        token: str | None,
        *,
        expires_in: float | None = None,
        tokens: tuple[str, ...] = (),
    ) -> Subscriber:
        """Open a stream for a client holding `token` (None: the API key), or refuse it.

        A multiplexed stream (stream/sse/multi.py) opened with several run tokens
        passes them as `tokens`: it takes a slot of each, so a link handed out still
        opens at most `max_streams_per_token` streams however they are combined.

        The stream ends at its (jittered) lifetime, or `expires_in` seconds from now
        if that is sooner (the run token it was opened with expires).
        """
        held = tokens or ((token,) if token is not None else ())
        if not self.accepting:
            raise StreamRefused("shutting_down", "the server is shutting down")
        if len(self._streams) >= self.max_streams:
            self.metrics.streams_refused.labels("server_cap").inc()
            raise StreamRefused(
                "server_cap", f"the server already has {len(self._streams)} open streams"
            )
        if any(self._per_token.get(t, 0) >= self.max_streams_per_token for t in held):
            self.metrics.streams_refused.labels("token_cap").inc()
            raise StreamRefused(
                "token_cap",
                f"this token already has {self.max_streams_per_token} open streams;"
                " close one first",
            )
        age = self.lifetime * (1.0 - LIFETIME_JITTER * random.random())
        if expires_in is not None:
            age = min(age, expires_in)
        sub = Subscriber(
            self.buffer, token=token, tokens=held, deadline=self.clock.monotonic() + age
        )
        self._streams.add(sub)
        for held_token in held:
            self._per_token[held_token] = self._per_token.get(held_token, 0) + 1
        return sub

    def release(self, sub: Subscriber) -> None:
        """The stream's response is over (idempotent); count it if it was dropped as slow.

        Called from the response's own `finally`, and once more when the request is
        over (see stream/sse/routes.py), for a response whose body never started.
        """
        sub.detach()
        if sub not in self._streams:
            return
        self._streams.discard(sub)
        for held_token in sub.tokens:
            left = self._per_token.get(held_token, 1) - 1
            if left > 0:
                self._per_token[held_token] = left
            else:
                self._per_token.pop(held_token, None)
        since = sub.writing_since
        if sub.overflowed:
            self.count_slow("buffer")
        elif sub.dropped or (
            since is not None and self.clock.monotonic() - since >= self.write_timeout
        ):
            self.count_slow("write_timeout")

    def count_slow(self, cause: str) -> None:
        """A stream was dropped for being slow (`buffer` or `write_timeout`)."""
        self.dropped_slow += 1
        self.metrics.dropped_slow.labels(cause).inc()
        log.info("dropped a slow stream (%s); its client resumes from the log", cause)

    def shut(self) -> int:
        """Refuse new streams and end every open one with a last comment (shutdown)."""
        self.accepting = False
        closing = [sub for sub in self._streams if not sub.closed]
        for sub in closing:
            sub.close(SHUTDOWN)
        self.metrics.streams_closed.labels("shutdown").inc(len(closing))
        return len(closing)

    # -- the watchdog ----------------------------------------------------------
    def start(self) -> None:
        self._watchdog = asyncio.create_task(self._police(), name="steplog-stream-watchdog")

    async def stop(self) -> None:
        """Stop policing and refuse new streams; the open ones are closed by the hub."""
        self.accepting = False
        task, self._watchdog = self._watchdog, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def policing(self) -> bool:
        return self._watchdog is not None and not self._watchdog.done()

    @property
    def watchdog_interval(self) -> float:
        return min(1.0, max(0.05, self.write_timeout / 4))

    async def _police(self) -> None:
        while True:
            await self.clock.sleep(self.watchdog_interval)
            try:
                self.check_streams()
            except Exception:  # a bug here must not leave every stream unpoliced
                log.exception("checking open streams failed")

    def check_streams(self) -> None:
        """One watchdog pass: drop streams stuck writing, end those past their lifetime."""
        now = self.clock.monotonic()
        for sub in self._streams:
            since = sub.writing_since
            if since is not None and now - since >= self.write_timeout:
                sub.drop()
            elif not sub.closed and now >= sub.deadline:
                sub.close(LIFETIME)
                self.metrics.streams_closed.labels("lifetime").inc()
