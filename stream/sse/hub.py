"""The hub: what the server holds for its open streams, in two parts.

- **Admission** (stream/sse/admission.py): which streams may open (caps per server
  and per run token), and when one must end (lifetime, token expiry, shutdown, a
  client that stopped reading: the watchdog).
- **The tail** (stream/sse/tail.py): one follower of the log per process, which
  encodes each new event once and fans the bytes out to the subscribed streams.

They meet the response body (stream/sse/body.py) only through a `Subscriber`
(stream/sse/subscriber.py), whose state each side writes in one direction.
Time comes from one injected clock (functions/clock.py) for all three.

This module wires the two parts together behind the one object the app holds
(`AppState.hub`) and the routes, health checks and shutdown use.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager

from functions.clock import SYSTEM_CLOCK, Clock
from storage import EventLog
from stream.http.metrics import Metrics
from stream.sse.admission import LIFETIME, SHUTDOWN, Admission, StreamRefused
from stream.sse.subscriber import Subscriber
from stream.sse.tail import READ_BATCH, Tail

__all__ = ["LIFETIME", "READ_BATCH", "SHUTDOWN", "StreamRefused", "Subscriber", "TailHub"]


class TailHub:
    """Admits and polices the open streams, and follows the log for them."""

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
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.events = events
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.admission = Admission(
            clock=clock,
            metrics=self.metrics,
            buffer=buffer,
            max_streams=max_streams,
            max_streams_per_token=max_streams_per_token,
            lifetime=lifetime,
            write_timeout=write_timeout,
        )
        self.tail = Tail(
            events,
            poll_interval=poll_interval,
            buffer=buffer,
            clock=clock,
            metrics=self.metrics,
            on_slow=self.admission.count_slow,
        )

    async def start(self) -> None:
        await self.tail.start()
        self.admission.start()

    async def stop(self) -> None:
        await self.admission.stop()
        await self.tail.stop()
        for sub in [*self.admission.streams, *self.tail.subscribers()]:
            sub.close()

    @property
    def following(self) -> bool:
        """The tail and the watchdog are running (for `/readyz`)."""
        return self.tail.following and self.admission.policing

    @property
    def accepting(self) -> bool:
        return self.admission.accepting

    @property
    def open_streams(self) -> int:
        return self.admission.open_streams

    @property
    def dropped_slow(self) -> int:
        return self.admission.dropped_slow

    # -- admission ----------------------------------------------------------------
    def admit(
        self, token: str | None, *, expires_in: float | None = None, tokens: tuple[str, ...] = ()
    ) -> Subscriber:
        """Open a stream (see `Admission.admit`); `StreamRefused` over a cap."""
        return self.admission.admit(token, expires_in=expires_in, tokens=tokens)

    def release(self, sub: Subscriber) -> None:
        """The stream's response is over (idempotent)."""
        self.admission.release(sub)

    def shut(self) -> int:
        """Refuse new streams and end every open one with a last comment (shutdown)."""
        return self.admission.shut()

    def check_streams(self) -> None:
        """One watchdog pass (the watchdog task runs it every `watchdog_interval`)."""
        self.admission.check_streams()

    # -- the tail -------------------------------------------------------------------
    def subscribe(
        self, run_id: str | None, sub: Subscriber | None = None
    ) -> AbstractContextManager[Subscriber]:
        """Receive the frames of one run (or of every run with `None`) while inside."""
        return self.tail.subscribe(run_id, sub)

    def subscribe_set(
        self, run_ids: frozenset[str], sub: Subscriber
    ) -> AbstractContextManager[Subscriber]:
        """Receive global frames (`id:` the `pos`) of the runs in `run_ids` while inside."""
        return self.tail.subscribe_set(run_ids, sub)

    def subscribers(self) -> Iterator[Subscriber]:
        return self.tail.subscribers()
