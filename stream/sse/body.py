"""The SSE bodies: replay from the log after the cursor, then follow live.

Replay reads large batches and writes each as one chunk. Going live, the stream
subscribes to the hub first and then reads the log once more, so an event
committed between the last replay read and the subscription is not missed;
anything delivered twice is dropped by comparing with the cursor. Idle streams
get a `: ping` comment every `ping_interval` seconds.

Every body runs inside `policed`, which is the response's whole life on one
screen: it tells the hub which task writes the response (what the watchdog
cancels) and marks each write's start (`writing_since`), sends the hub's last
comment when the hub ends the stream (lifetime, shutdown), and in one `finally`,
however the response ends (finished, client gone, dropped as slow), gives the
stream's slot back, makes the hub forget the task, and closes the body (which
leaves the hub's fan-out and stops the pings). Nothing waits for the garbage
collector: a cancelled task keeps its traceback, and with it the frames and the
chunk being sent, so anything left referring to it would keep all of that.
A body that never starts is released at the end of its request (stream/sse/routes.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

from functions.clock import Clock, Timer
from storage import TERMINAL_EVENTS, EventLog
from stream.http.metrics import Metrics
from stream.sse.encoder import encode_comment, encode_retry
from stream.sse.frames import global_frame, replay_frames
from stream.sse.hub import SHUTDOWN, Subscriber, TailHub

REPLAY_BATCH = 2000
PING = encode_comment("ping")

Page = tuple[bytes, int, int, bool]
"""A replayed page: (frames as one chunk, events in it, the last id, did the run end)."""

Reader = Callable[[int], Awaitable[Page]]


def run_stream(
    events: EventLog,
    hub: TailHub,
    sub: Subscriber,
    run_id: str,
    cursor: int,
    *,
    retry_ms: int,
    ping_interval: float,
) -> AsyncGenerator[bytes, None]:
    """One run's events after `cursor` (a `seq`), ending after the terminal event."""

    async def read(after: int) -> Page:
        # The backend builds the envelopes (SQLite: in SQL, off the event loop).
        rows = await events.read_run_envelopes(run_id, after, REPLAY_BATCH)
        if not rows:
            return b"", 0, after, False
        seq, kind, _ = rows[-1]
        return replay_frames(rows), len(rows), seq, kind in TERMINAL_EVENTS

    body = _stream(read, hub, sub, run_id, cursor, retry_ms, ping_interval)
    return policed(hub, sub, body)


def global_stream(
    events: EventLog,
    hub: TailHub,
    sub: Subscriber,
    cursor: int,
    *,
    retry_ms: int,
    ping_interval: float,
) -> AsyncGenerator[bytes, None]:
    """Every run's events after `cursor` (a global `pos`); never ends by itself."""

    async def read(after: int) -> Page:
        batch = await events.read_all(after, REPLAY_BATCH)
        if not batch:
            return b"", 0, after, False
        return b"".join([global_frame(e) for e in batch]), len(batch), batch[-1].pos, False

    body = _stream(read, hub, sub, None, cursor, retry_ms, ping_interval)
    return policed(hub, sub, body)


async def farewell_stream(retry_ms: int) -> AsyncGenerator[bytes, None]:
    """The whole body of a stream asked for while the server shuts down.

    A 200 that ends at once, not a 503: `EventSource` gives up for good on an error
    status, but reconnects (after `retry`) when a stream ends, which is what a
    client of an instance going away should do.
    """
    yield encode_retry(retry_ms) + SHUTDOWN


async def policed(
    hub: TailHub, sub: Subscriber, body: AsyncGenerator[bytes, None]
) -> AsyncGenerator[bytes, None]:
    """Run `body` under the hub's watch, and clean up after it (see the module docstring)."""
    sub.attach(asyncio.current_task())
    clock = hub.clock
    try:
        # The generator stays suspended at `yield` while the server writes the chunk,
        # and Hypercorn waits for the socket to drain inside that write: so the time
        # since `writing_since` is how long the client has not been taking our bytes.
        async for chunk in body:
            sub.writing(clock.monotonic())
            yield chunk
            sub.wrote()
        if sub.closed and sub.farewell:
            sub.writing(clock.monotonic())
            yield sub.farewell
            sub.wrote()
    finally:
        hub.release(sub)  # the slot, and the hub's reference to this task
        await body.aclose()  # unsubscribes and stops the pings, if it got that far


async def _stream(
    read: Reader,
    hub: TailHub,
    sub: Subscriber,
    run_id: str | None,
    cursor: int,
    retry_ms: int,
    ping_interval: float,
) -> AsyncGenerator[bytes, None]:
    """Replay, subscribe, replay the gap, then follow: the shape of every stream."""
    position = _Position(cursor)
    yield encode_retry(retry_ms)
    async for chunk in _catch_up(read, position, sub, hub.metrics):
        yield chunk
    if position.ended or sub.closed:
        return
    with hub.subscribe(run_id, sub):
        async for chunk in _catch_up(read, position, sub, hub.metrics):
            yield chunk
        if position.ended or sub.closed:
            return
        # Live: the hot path, one pass per event per stream, so it is written out here
        # rather than delegated to another generator (each layer costs every delivery).
        cursor = position.cursor
        pings = PingClock(sub, ping_interval, hub.clock)
        try:
            while True:
                if not sub.ready:
                    await sub.wait()  # woken by the hub's push or close, or by `pings`
                if sub.closed or sub.overflowed:
                    return  # the client reconnects with Last-Event-ID, resumes from the log
                frames: list[bytes] = []
                ended = False
                for key, frame, terminal in sub.drain():
                    if key <= cursor:
                        continue
                    frames.append(frame)
                    cursor = key
                    if terminal:
                        ended = True
                        break
                if frames:
                    pings.wrote()
                    yield b"".join(frames)  # one frame: the frame itself, not a copy
                    if ended:
                        return
                elif pings.due():
                    yield PING
        finally:
            pings.stop()


class _Position:
    """Where a stream is: the last id sent, and whether the run's end was sent."""

    __slots__ = ("cursor", "ended")

    def __init__(self, cursor: int) -> None:
        self.cursor = cursor
        self.ended = False


async def _catch_up(
    read: Reader,
    position: _Position,
    sub: Subscriber,
    metrics: Metrics,
) -> AsyncIterator[bytes]:
    """Replay batches after the cursor until the log has nothing more (or the hub says stop)."""
    while not sub.closed:
        chunk, count, position.cursor, position.ended = await read(position.cursor)
        if not count:
            return
        metrics.events_replayed.inc(count)
        yield chunk
        if position.ended or count < REPLAY_BATCH:
            return


class PingClock:
    """When an idle stream is owed a `: ping`: one timer per ping interval, not per event.

    A live stream used to wait for each event under `asyncio.timeout(ping_interval)`,
    which schedules and cancels a timer for every event it is sent: about 5 µs of the
    roughly 50 µs a delivery costs, times every subscriber. Here a write only notes
    the time; the timer fires once per interval, and either re-arms itself for the
    interval after the last write or wakes the stream to send its ping. Time and
    timers come from the hub's clock (functions/clock.py), so pings are tested on a
    fake one.
    """

    __slots__ = ("_clock", "_handle", "_interval", "_last", "_owed", "_sub")

    def __init__(self, sub: Subscriber, interval: float, clock: Clock) -> None:
        self._sub = sub
        self._interval = interval
        self._clock = clock
        self._owed = False
        self._last = clock.monotonic()
        self._handle: Timer | None = clock.call_later(interval, self._check)

    def wrote(self) -> None:
        """Bytes went out: the next ping is due an interval from now."""
        self._last = self._clock.monotonic()
        if self._owed:  # these bytes do for the ping that was owed
            self._owed = False
            self._arm()

    def due(self) -> bool:
        """Whether a ping is owed now; if so, it counts as sent."""
        if not self._owed:
            return False
        self._owed = False
        self._last = self._clock.monotonic()
        self._arm()
        return True

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        self.stop()
        self._handle = self._clock.call_later(self._interval, self._check)

    def _check(self) -> None:
        self._handle = None
        left = self._last + self._interval - self._clock.monotonic()
        if left > 0:
            self._handle = self._clock.call_later(left, self._check)  # written since: wait on
            return
        self._owed = True
        self._sub.nudge()
