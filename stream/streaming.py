"""The SSE bodies: replay from the log after the cursor, then follow live.

Replay reads large batches and writes each as one chunk. Going live, the stream
subscribes to the hub first and then reads the log once more, so an event
committed between the last replay read and the subscription is not missed;
anything delivered twice is dropped by comparing with the cursor. Idle streams
get a `: ping` comment every `ping_interval` seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from storage import Event, EventLog
from stream.frames import global_frame, run_frame
from stream.hub import Subscriber, TailHub
from stream.sse import encode_comment, encode_retry

REPLAY_BATCH = 2000
PING = encode_comment("ping")

Reader = Callable[[int], Awaitable[list[Event]]]


def run_stream(
    events: EventLog,
    hub: TailHub,
    run_id: str,
    cursor: int,
    *,
    retry_ms: int,
    ping_interval: float,
) -> AsyncIterator[bytes]:
    """One run's events after `cursor` (a `seq`), ending after the terminal event."""

    async def read(after: int) -> list[Event]:
        return await events.read_run(run_id, after, REPLAY_BATCH)

    return _stream(read, hub, run_id, run_frame, cursor, retry_ms, ping_interval)


def global_stream(
    events: EventLog,
    hub: TailHub,
    cursor: int,
    *,
    retry_ms: int,
    ping_interval: float,
) -> AsyncIterator[bytes]:
    """Every run's events after `cursor` (a global `pos`); never ends by itself."""

    async def read(after: int) -> list[Event]:
        return await events.read_all(after, REPLAY_BATCH)

    return _stream(read, hub, None, global_frame, cursor, retry_ms, ping_interval)


async def _stream(
    read: Reader,
    hub: TailHub,
    run_id: str | None,
    frame: Callable[[Event], bytes],
    cursor: int,
    retry_ms: int,
    ping_interval: float,
) -> AsyncIterator[bytes]:
    """Replay, subscribe, replay the gap, then follow: the shape of every stream."""
    position = _Position(cursor, "seq" if run_id is not None else "pos")
    yield encode_retry(retry_ms)
    async for chunk in _catch_up(read, position, frame):
        yield chunk
    if position.ended:
        return
    with hub.subscribe(run_id) as sub:
        async for chunk in _catch_up(read, position, frame):
            yield chunk
        if position.ended:
            return
        async for chunk in _follow(sub, position.cursor, ping_interval):
            yield chunk


class _Position:
    """Where a stream is: the last id sent, and whether the run's end was sent."""

    __slots__ = ("cursor", "ended", "key")

    def __init__(self, cursor: int, key: str) -> None:
        self.cursor = cursor
        self.key = key
        self.ended = False


async def _catch_up(
    read: Reader, position: _Position, frame: Callable[[Event], bytes]
) -> AsyncIterator[bytes]:
    """Replay batches after the cursor until the log has nothing more."""
    while True:
        batch = await read(position.cursor)
        if not batch:
            return
        last = batch[-1]
        position.cursor = getattr(last, position.key)
        position.ended = position.key == "seq" and last.terminal
        yield b"".join([frame(event) for event in batch])
        if position.ended or len(batch) < REPLAY_BATCH:
            return


async def _follow(sub: Subscriber, cursor: int, ping_interval: float) -> AsyncIterator[bytes]:
    while True:
        if not sub.ready.is_set():
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a client's
            # disconnect (a cancel) that lands in the same loop turn as a wake-up.
            try:
                async with asyncio.timeout(ping_interval):
                    await sub.ready.wait()
            except TimeoutError:
                yield PING
                continue
        if sub.closed or sub.overflowed:
            return  # the client reconnects with Last-Event-ID and resumes from the log
        chunk: list[bytes] = []
        ended = False
        for key, frame, terminal in sub.drain():
            if key <= cursor:
                continue
            chunk.append(frame)
            cursor = key
            if terminal:
                ended = True
                break
        if chunk:
            yield b"".join(chunk)
        if ended:
            return
