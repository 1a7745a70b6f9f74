"""The tail hub: one reader of the log per process, fanning frames out to subscribers.

Readers never poll per subscriber. The hub waits for "something was committed
in this process" (the log's commit listener) or "the poll interval passed"
(which is how commits from other processes on the same database arrive), then
reads every event after its cursor once, encodes each event once per stream
kind, and hands the same bytes to every subscriber of that run (and of the
global stream). The wake-up is only an optimisation; reading after the cursor
is what makes it correct.

The hub is also where open streams are admitted and policed, because it is the
one place that sees all of them:

- **Caps.** `admit` refuses a stream over the server-wide cap or over the cap of
  the run token it was opened with (the API key is bounded by the server cap only).
- **Slow subscribers.** A subscriber has a bounded buffer; one that cannot keep up
  overflows and is disconnected. One whose socket stays unwritable is caught by the
  watchdog below. Either way its client reconnects with `Last-Event-ID` and resumes
  from the log — a slow client never holds memory or slows anyone else.
- **Lifetime and shutdown.** A stream is closed with a last comment when it reaches
  its maximum age, or when the server shuts down, so that its client reconnects
  (to another instance, behind a load balancer) instead of being cut off.

One watchdog task serves every stream (a task per stream would cost memory on
each of thousands of idle ones). Each stream marks `writing_since` while its
bytes are being written: Hypercorn awaits the socket's drain inside the write, so
a client that stops reading leaves its stream's task blocked there. The
watchdog cancels such a task, which ends the response; the kernel's
`TCP_USER_TIMEOUT` (set by `steplog serve`) then frees the socket itself.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from datetime import datetime

from storage import Event, EventLog, StorageClosed
from stream.http.metrics import Metrics
from stream.sse.encoder import encode_comment
from stream.sse.frames import global_frame, run_frame

log = logging.getLogger("steplog.hub")

READ_BATCH = 2000
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


class Subscriber:
    """One open stream: a bounded queue of (key, frame, terminal) and its policing state."""

    __slots__ = (
        "_task",
        "closed",
        "deadline",
        "dropped",
        "farewell",
        "items",
        "limit",
        "overflowed",
        "ready",
        "token",
        "writing_since",
    )

    def __init__(self, limit: int, *, token: str | None = None, deadline: float = math.inf) -> None:
        self.items: collections.deque[tuple[int, bytes, bool]] = collections.deque()
        self.ready = asyncio.Event()
        self.limit = limit
        self.overflowed = False
        self.closed = False
        self.farewell = b""
        """The comment to send before ending, when the server ends the stream."""
        self.token = token
        self.deadline = deadline
        self._task: asyncio.Task[object] | None = None
        """The task writing this stream's response, only while the response runs."""
        self.writing_since: float | None = None
        """Set by the response while the server writes one of its chunks (read by the
        watchdog): how long the client has not been taking our bytes."""
        self.dropped = False

    def push(self, key: int, frame: bytes, terminal: bool) -> None:
        if self.overflowed or self.closed:
            return
        if len(self.items) >= self.limit:
            self.overflowed = True
            self.items.clear()
        else:
            self.items.append((key, frame, terminal))
        self.ready.set()

    def close(self, farewell: bytes = b"") -> None:
        """End the stream at its next wake-up, sending `farewell` first."""
        if not self.closed:
            self.closed = True
            self.farewell = farewell
        self.ready.set()

    def drain(self) -> list[tuple[int, bytes, bool]]:
        items = list(self.items)
        self.items.clear()
        self.ready.clear()
        return items

    def attach(self, task: asyncio.Task[object] | None) -> None:
        """The response started, written by `task`: what `drop` cancels."""
        self._task = task

    def detach(self) -> None:
        """The response is over: forget its task.

        A finished task holds its coroutine's frames, and a cancelled one the
        traceback with the chunk that was being sent; a stream that outlives its
        response (anything still referring to it) must not keep them alive.
        """
        self._task = None

    def drop(self) -> bool:
        """End a response stuck writing by cancelling its task (once); whether it did."""
        if self.dropped or self._task is None:
            return False
        self.dropped = True
        self._task.cancel()  # the response ends; the hub's release() counts it
        return True


class TailHub:
    """Follows the log and fans each new event out to the streams that want it."""

    def __init__(
        self,
        events: EventLog,
        *,
        poll_interval: float,
        buffer: int,
        max_streams: int = 10_000,
        max_streams_per_token: int = 10,
        lifetime: float = 900.0,
        write_timeout: float = 30.0,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.events = events
        self.poll_interval = poll_interval
        self.buffer = buffer
        self.max_streams = max_streams
        self.max_streams_per_token = max_streams_per_token
        self.lifetime = lifetime
        self.write_timeout = write_timeout
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.accepting = True
        self.dropped_slow = 0
        self._runs: dict[str, set[Subscriber]] = {}
        self._global: set[Subscriber] = set()
        self._subscriptions = 0
        self._streams: set[Subscriber] = set()
        self._per_token: dict[str, int] = {}
        self._cursor = 0
        self._wake = asyncio.Event()
        self._committed = 0
        """The highest pos this process's writer has committed (from the commit listener)."""
        self._task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.metrics.track_open_streams(lambda: len(self._streams))

    async def start(self) -> None:
        self._cursor = await self.events.head()
        self.events.add_commit_listener(self._on_commit)
        self._task = asyncio.create_task(self._follow(), name="steplog-tail-hub")
        self._watchdog = asyncio.create_task(self._police(), name="steplog-stream-watchdog")

    async def stop(self) -> None:
        self.accepting = False
        self.events.remove_commit_listener(self._on_commit)
        for task in (self._task, self._watchdog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for sub in [*self._streams, *self._all()]:
            sub.close()

    @property
    def following(self) -> bool:
        """The tail reader and the watchdog are running (for `/readyz`)."""
        return all(task is not None and not task.done() for task in (self._task, self._watchdog))

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    # -- admission -------------------------------------------------------------
    def admit(self, token: str | None) -> Subscriber:
        """Open a stream for a client holding `token` (None: the API key), or refuse it."""
        if not self.accepting:
            raise StreamRefused("shutting_down", "the server is shutting down")
        if len(self._streams) >= self.max_streams:
            self.metrics.streams_refused.labels("server_cap").inc()
            raise StreamRefused(
                "server_cap", f"the server already has {len(self._streams)} open streams"
            )
        if token is not None and self._per_token.get(token, 0) >= self.max_streams_per_token:
            self.metrics.streams_refused.labels("token_cap").inc()
            raise StreamRefused(
                "token_cap",
                f"this token already has {self.max_streams_per_token} open streams;"
                " close one first",
            )
        jitter = 1.0 - LIFETIME_JITTER * random.random()
        sub = Subscriber(self.buffer, token=token, deadline=self.clock() + self.lifetime * jitter)
        self._streams.add(sub)
        if token is not None:
            self._per_token[token] = self._per_token.get(token, 0) + 1
        return sub

    def release(self, sub: Subscriber) -> None:
        """The stream's response is over (idempotent); count it if it was dropped as slow.

        Called from the response's own `finally`, and once more when the request is
        over (see `sse_routes`), for a response whose body never started.
        """
        sub.detach()
        if sub not in self._streams:
            return
        self._streams.discard(sub)
        if sub.token is not None:
            left = self._per_token.get(sub.token, 1) - 1
            if left > 0:
                self._per_token[sub.token] = left
            else:
                self._per_token.pop(sub.token, None)
        since = sub.writing_since
        if sub.overflowed:
            self._count_slow("buffer")
        elif sub.dropped or (since is not None and self.clock() - since >= self.write_timeout):
            self._count_slow("write_timeout")

    def _count_slow(self, cause: str) -> None:
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
    @property
    def watchdog_interval(self) -> float:
        return min(1.0, max(0.05, self.write_timeout / 4))

    async def _police(self) -> None:
        while True:
            await asyncio.sleep(self.watchdog_interval)
            try:
                self.check_streams()
            except Exception:  # a bug here must not leave every stream unpoliced
                log.exception("checking open streams failed")

    def check_streams(self) -> None:
        """One watchdog pass: drop streams stuck writing, end those past their lifetime."""
        now = self.clock()
        for sub in self._streams:
            since = sub.writing_since
            if since is not None and now - since >= self.write_timeout:
                sub.drop()
            elif not sub.closed and now >= sub.deadline:
                sub.close(LIFETIME)
                self.metrics.streams_closed.labels("lifetime").inc()

    # -- fan-out ---------------------------------------------------------------
    def _all(self) -> Iterator[Subscriber]:
        yield from self._global
        for subs in self._runs.values():
            yield from subs

    @contextlib.contextmanager
    def subscribe(self, run_id: str | None, sub: Subscriber | None = None) -> Iterator[Subscriber]:
        """Receive the frames of one run (or of every run with `None`) while inside.

        `sub` is an admitted stream; without one, an unpoliced subscriber is made
        (for in-process consumers and tests).
        """
        own = sub is None
        if sub is None:
            sub = Subscriber(self.buffer)
        group = self._global if run_id is None else self._runs.setdefault(run_id, set())
        self._subscriptions += 1  # see `_skip_unwatched`
        group.add(sub)
        try:
            yield sub
        finally:
            group.discard(sub)
            if run_id is not None and not group:
                self._runs.pop(run_id, None)
            if own and sub.overflowed:
                self._count_slow("buffer")

    def _on_commit(self, pos: int) -> None:
        self._committed = max(self._committed, pos)
        self._wake.set()

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow a cancel
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
            woken = self._wake.is_set()
            self._wake.clear()
            try:
                if await self._skip_unwatched(self._committed if woken else None):
                    continue
                while True:
                    batch = await self.events.read_all(self._cursor, READ_BATCH)
                    if not batch:
                        break
                    self._dispatch(batch)
                    self._cursor = batch[-1].pos
                    if len(batch) < READ_BATCH:
                        break
            except StorageClosed:
                return
            except Exception:
                log.exception("reading new events failed; retrying after the poll interval")

    async def _skip_unwatched(self, committed: int | None) -> bool:
        """With no stream open, move the cursor to the head instead of reading every event.

        Safe because a stream subscribes first and then reads the log itself up to
        now: if nobody subscribed while the head was read, no one can need the events
        up to it from the hub. This keeps a busy log with nobody watching cheap.
        Woken by a commit of this process, the head it `committed` is used as is (no
        read per commit; a head from another process is picked up at the next poll).
        """
        if self._runs or self._global:
            return False
        if committed is not None:
            self._cursor = max(self._cursor, committed)
            return True
        subscriptions = self._subscriptions
        head = await self.events.head()
        if subscriptions != self._subscriptions or self._runs or self._global:
            return False
        self._cursor = max(self._cursor, head)
        return True

    def _dispatch(self, batch: list[Event]) -> None:
        self.metrics.tail_lag.observe(_age(batch[0]))
        runs, everyone = self._runs, self._global
        for event in batch:
            subs = runs.get(event.run_id)
            if subs:
                frame = run_frame(event)
                for sub in subs:
                    sub.push(event.seq, frame, event.terminal)
            if everyone:
                frame = global_frame(event)
                for sub in everyone:
                    sub.push(event.pos, frame, False)


def _age(event: Event) -> float:
    """Seconds since the event was committed (0 if the clocks disagree)."""
    try:
        committed = datetime.fromisoformat(event.at).timestamp()
    except ValueError:
        return 0.0
    return max(0.0, time.time() - committed)
