"""Pings, stream lifetimes and leases on a fake clock (tests/support/clock.py).

Each of these behaviours is about seconds to minutes of waiting; on the fake clock
they take milliseconds and say exactly when: "a ping after 15 s of silence, not at
14.9 s", "a stream ends at its lifetime", "a heartbeat moves the lease", "a lease
nobody renews is taken over once it has expired, not before". Real SQLite logs
throughout; only time is fake.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from functions import registry
from functions.registry import function
from functions.worker import WorkerPool
from storage import EventLog, EventType, NewEvent, RunStatus, open_log
from stream.sse.body import PING, global_stream, run_stream
from stream.sse.hub import LIFETIME, TailHub
from tests.support.clock import FakeClock, turns
from tests.support.wait import wait_for

registry.load()

DEADLINE = 10.0
"""Real seconds at most for what leaves the event loop (a commit on the writer thread)."""


class Sleep(BaseModel):
    seconds: float


@function("test_fake_sleep", params=Sleep)
async def fake_sleep(ctx: Any, params: Sleep) -> dict[str, float]:
    """Sleeps on the pool's clock: as long as the test moves it."""
    await ctx.clock.sleep(params.seconds)
    return {"slept": params.seconds}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def log(tmp_path: Path, clock: FakeClock) -> AsyncIterator[EventLog]:
    """A real SQLite log whose wall clock (event times, lease expiries) is the fake one."""
    events = open_log(str(tmp_path / "clocked.db"), clock=clock.wall)
    await events.open()
    yield events
    await events.close()


@pytest.fixture
async def hub(log: EventLog, clock: FakeClock) -> AsyncIterator[TailHub]:
    hub = TailHub(log, poll_interval=60, buffer=100, lifetime=60, write_timeout=5, clock=clock)
    await hub.start()
    yield hub
    await hub.stop()


async def running_run(events: EventLog) -> tuple[str, int]:
    run, _ = await events.create_run("ticker", {})
    claimed = await events.claim_run("w", 30, ["ticker"])
    assert claimed is not None
    return run.id, claimed.attempt


class Reader:
    """A client reading a stream's body as fast as it comes, in a task of its own (the
    response's task: the one the watchdog would cancel)."""

    def __init__(self, clock: FakeClock, body: AsyncIterator[bytes]) -> None:
        self.clock = clock
        self.chunks: list[bytes] = []
        self.ended = False
        self._armed = clock.timers
        self._task = asyncio.ensure_future(self._read(body))

    async def _read(self, body: AsyncIterator[bytes]) -> None:
        async for chunk in body:
            self.chunks.append(chunk)
        self.ended = True

    async def live(self) -> None:
        """Until the stream follows live (its ping timer is armed): going live reads
        the log once more, which the fake clock cannot hurry."""

        async def following() -> bool:
            return self.clock.timers > self._armed

        await wait_for(following, DEADLINE)

    async def until(self, count: int) -> list[bytes]:
        """Until `count` chunks have come (or the stream ended); all of them."""

        async def arrived() -> bool:
            return len(self.chunks) >= count or self.ended

        await wait_for(arrived, DEADLINE)
        return self.chunks

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


# -- pings ------------------------------------------------------------------------------


async def test_a_ping_after_the_interval_of_silence_and_not_before(
    log: EventLog, hub: TailHub, clock: FakeClock
) -> None:
    run_id, attempt = await running_run(log)
    body = run_stream(log, hub, hub.admit(None), run_id, 0, retry_ms=100, ping_interval=15)
    reader = Reader(clock, body)
    try:
        await reader.live()
        retry, replay = await reader.until(2)  # run.queued and run.started
        assert retry.startswith(b"retry:") and b"id: 2\n" in replay
        await clock.advance(14.9)
        assert len(reader.chunks) == 2
        await clock.advance(0.1)
        assert (await reader.until(3))[2] == PING

        # An event restarts the silence: the next ping is 15 s after it, not after the ping.
        await clock.advance(10)
        await log.append(NewEvent(run_id, "log", attempt, message="tick"))
        assert b"id: 3\n" in (await reader.until(4))[3]
        await clock.advance(14.9)
        assert len(reader.chunks) == 4
        await clock.advance(0.1)
        assert (await reader.until(5))[4] == PING
    finally:
        await reader.close()
    await turns()
    assert clock.timers == 2  # the stream's ping timer went with it (the tail and watchdog stay)


async def test_a_busy_stream_gets_no_pings(log: EventLog, clock: FakeClock) -> None:
    run_id, attempt = await running_run(log)
    hub = TailHub(log, poll_interval=60, buffer=100, lifetime=3600, clock=clock)
    await hub.start()
    body = run_stream(log, hub, hub.admit(None), run_id, 0, retry_ms=100, ping_interval=15)
    reader = Reader(clock, body)
    try:
        await reader.live()
        for seq in range(3, 13):  # an event every 10 s for 100 s
            await clock.advance(10)
            await log.append(NewEvent(run_id, "log", attempt, message=str(seq)))
            assert f"id: {seq}\n".encode() in (await reader.until(seq))[-1]
        assert PING not in reader.chunks
        await clock.advance(15)
        assert (await reader.until(13))[-1] == PING
    finally:
        await reader.close()
        await hub.stop()


# -- lifetimes --------------------------------------------------------------------------


async def test_a_stream_ends_at_its_lifetime(log: EventLog, hub: TailHub, clock: FakeClock) -> None:
    """Lifetime 60 s, jittered down by at most 10%: open at 53.9 s, over by 61 s."""
    body = global_stream(log, hub, hub.admit(None), 0, retry_ms=100, ping_interval=1000)
    reader = Reader(clock, body)
    try:
        await reader.live()
        await clock.advance(53.9)
        assert len(reader.chunks) == 1 and hub.open_streams == 1
        await clock.advance(60 + hub.admission.watchdog_interval - 53.9)
        chunks = await reader.until(2)
        assert chunks[1:] == [LIFETIME]
        await wait_for(lambda: _true(reader.ended), DEADLINE)
    finally:
        await reader.close()
    assert hub.open_streams == 0
    closed = hub.metrics.registry.get_sample_value(
        "steplog_streams_closed_total", {"reason": "lifetime"}
    )
    assert closed == 1


async def test_a_stream_ends_when_its_token_expires(
    log: EventLog, hub: TailHub, clock: FakeClock
) -> None:
    run_id, _ = await running_run(log)
    sub = hub.admit("a-run-token", expires_in=10)
    reader = Reader(clock, run_stream(log, hub, sub, run_id, 2, retry_ms=100, ping_interval=1000))
    try:
        await reader.live()
        await clock.advance(9.9)
        assert len(reader.chunks) == 1
        await clock.advance(0.1 + hub.admission.watchdog_interval)
        assert (await reader.until(2))[1:] == [LIFETIME]
    finally:
        await reader.close()


async def _true(value: bool) -> bool:
    return value


async def test_a_stream_stuck_writing_is_dropped_after_the_write_timeout(
    log: EventLog, hub: TailHub, clock: FakeClock
) -> None:
    """The watchdog task itself, on the fake clock: a write that never drains is cancelled
    once it has lasted the write timeout (5 s), not before."""
    sub = hub.admit(None)
    stuck = asyncio.ensure_future(asyncio.get_running_loop().create_future())
    sub.attach(stuck)  # type: ignore[arg-type]
    sub.writing(clock.monotonic())
    await clock.advance(4.9)
    assert not stuck.cancelled()
    await clock.advance(hub.admission.watchdog_interval)
    assert stuck.cancelled() and sub.dropped
    hub.release(sub)
    assert hub.dropped_slow == 1


# -- leases -----------------------------------------------------------------------------


async def test_heartbeats_keep_the_lease_while_the_run_goes_on(
    log: EventLog, clock: FakeClock
) -> None:
    pool = WorkerPool(log, concurrency=1, lease_seconds=30, poll_interval=5, clock=clock)
    pool.start()
    try:
        run, _ = await log.create_run("test_fake_sleep", {"seconds": 100})
        pool.notify()

        async def leased() -> Any:
            got = await log.get_run(run.id)
            return got if got.status == RunStatus.RUNNING else None

        claimed = await wait_for(leased, DEADLINE)
        assert claimed.lease_expires_at == pytest.approx(clock.wall() + 30)
        for _ in range(45):  # 45 s: well past the first lease's 30 s
            await armed(clock, 2)  # the function's sleep, and the next heartbeat
            await clock.advance(pool.heartbeat_interval)
        await armed(clock, 2)  # the last heartbeat is written
        renewed = await log.get_run(run.id)
        assert renewed.lease_expires_at == pytest.approx(clock.wall() + 30)
        # Nobody else may take the run: its lease is alive however old the claim is.
        assert await log.claim_run("another", 30, ["test_fake_sleep"]) is None
        await clock.advance(100)
        done = await wait_for(lambda: _finished(log, run.id), DEADLINE)
    finally:
        await pool.stop()
    assert done.status == RunStatus.SUCCEEDED and done.attempt == 1


async def test_a_lease_nobody_renews_is_taken_over_once_it_expires(
    log: EventLog, clock: FakeClock
) -> None:
    run, _ = await log.create_run("ticker", {"count": 1, "interval_ms": 0})
    dead = await log.claim_run("a-worker-that-died", 30, ["ticker"])
    assert dead is not None and dead.attempt == 1
    pool = WorkerPool(log, concurrency=1, lease_seconds=30, poll_interval=5, clock=clock)
    pool.start()
    try:
        for _ in range(5):  # 25 s of polls: the lease is still alive
            await armed(clock, 1)  # the slot waits for its next poll
            await clock.advance(5)
        await armed(clock, 1)
        # A claim made now sees a live lease (the pool's tries since saw the same).
        assert await log.claim_run("another", 30, ["ticker"]) is None
        assert (await log.get_run(run.id)).attempt == 1
        await clock.advance(5.1)  # past the lease: the next poll takes the run over

        async def taken_over() -> Any:
            if clock.timers == 1:  # the slot is idle: move on to its next poll
                await clock.advance(5)
            return await _finished(log, run.id)

        done = await wait_for(taken_over, DEADLINE)
    finally:
        await pool.stop()
    assert done.status == RunStatus.SUCCEEDED and done.attempt == 2
    types = [event.type for event in await log.read_run(run.id)]
    assert types[:4] == [
        EventType.RUN_QUEUED,
        EventType.RUN_STARTED,
        EventType.RUN_RETRYING,
        EventType.RUN_STARTED,
    ]


async def armed(clock: FakeClock, count: int) -> None:
    """Until `count` timers wait on the clock: the pool is between two of its waits
    (a heartbeat or a claim goes through the writer thread, which takes real time)."""

    async def waiting() -> bool:
        return clock.timers == count

    await wait_for(waiting, DEADLINE)


async def _finished(events: EventLog, run_id: str) -> Any:
    run = await events.get_run(run_id)
    return run if run.status.finished else None


async def test_the_fake_clock_fires_timers_in_order_at_their_time(clock: FakeClock) -> None:
    fired: list[tuple[str, float]] = []
    clock.call_later(2, lambda: fired.append(("b", clock.monotonic())))
    clock.call_later(1, lambda: fired.append(("a", clock.monotonic())))
    clock.call_later(3, lambda: fired.append(("never", clock.monotonic()))).cancel()
    await clock.advance(10)
    assert fired == [("a", 1001.0), ("b", 1002.0)] and clock.monotonic() == 1010.0


async def test_a_timeout_on_the_fake_clock_expires_on_fake_time(clock: FakeClock) -> None:
    async def blocked() -> None:
        async with clock.timeout(5):
            await asyncio.Event().wait()

    task = asyncio.ensure_future(blocked())
    await turns()
    await clock.advance(4.9)
    assert not task.done()
    await clock.advance(0.1)
    with pytest.raises(TimeoutError):
        await task
    assert clock.timers == 0
