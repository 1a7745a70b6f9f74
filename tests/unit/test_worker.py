"""The worker pool and Context against a real SQLite log (no server needed)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from functions import registry
from functions.context import SyncContext
from functions.registry import function
from functions.worker import WorkerPool
from storage import EventLog, EventType, RunStatus, open_log

registry.load()


class Empty(BaseModel):
    pass


@function("test_sync_steps", params=Empty)
def sync_steps(ctx: SyncContext, params: Empty) -> dict[str, Any]:
    """A plain function in a thread, using the same API synchronously."""
    assert threading.current_thread() is not threading.main_thread()
    with ctx.step("prepare", "Preparing"):
        ctx.progress(50, "half way")
        ctx.log("from a thread: Zoë")
    return {"thread": True}


@function("test_slow", params=Empty)
async def slow(ctx: Any, params: Empty) -> dict[str, int]:
    async with ctx.step("wait", "Waiting"):
        for i in range(200):
            await ctx.progress(min(i, 100), f"tick {i}")
            await asyncio.sleep(0.02)
    return {"done": 1}


async def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll an async predicate until it returns something truthy, within a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met before the deadline")


@pytest.fixture
async def events(tmp_path: Path) -> AsyncIterator[EventLog]:
    log = open_log(str(tmp_path / "w.db"))
    await log.open()
    yield log
    await log.close()


async def finished(events: EventLog, run_id: str) -> Any:
    async def check() -> Any:
        run = await events.get_run(run_id)
        return run if run.status.finished else None

    return await wait_for(check)


async def test_ticker_run_reports_every_step(events: EventLog) -> None:
    pool = WorkerPool(events, concurrency=2, poll_interval=0.05)
    pool.start()
    try:
        run, _ = await events.create_run("ticker", {"count": 3, "interval_ms": 0})
        pool.notify()
        done = await finished(events, run.id)
    finally:
        await pool.stop()
    assert done.status == RunStatus.SUCCEEDED and done.result == {"ticks": 3}
    types = [e.type for e in await events.read_run(run.id)]
    assert types == [
        "run.queued",
        "run.started",
        "step.started",
        "step.progress",
        "step.progress",
        "step.progress",
        "step.completed",
        "run.succeeded",
    ]
    completed = (await events.read_run(run.id))[-2]
    assert '"duration_ms"' in completed.data


async def test_failure_inside_a_step_fails_the_step_and_the_run(events: EventLog) -> None:
    pool = WorkerPool(events, concurrency=1, poll_interval=0.05)
    pool.start()
    try:
        run, _ = await events.create_run("ticker", {"count": 5, "interval_ms": 0, "fail_at": 3})
        done = await finished(events, run.id)
    finally:
        await pool.stop()
    assert done.status == RunStatus.FAILED and "tick 3" in (done.error or "")
    types = [e.type for e in await events.read_run(run.id)]
    assert types[-2:] == [EventType.STEP_FAILED, EventType.RUN_FAILED]


async def test_sync_function_runs_in_a_thread_through_the_same_log(events: EventLog) -> None:
    pool = WorkerPool(events, concurrency=1, poll_interval=0.05)
    pool.start()
    try:
        run, _ = await events.create_run("test_sync_steps", {})
        done = await finished(events, run.id)
    finally:
        await pool.stop()
    assert done.status == RunStatus.SUCCEEDED and done.result == {"thread": True}
    stored = await events.read_run(run.id)
    assert [e.type for e in stored][2:] == [
        "step.started",
        "step.progress",
        "log",
        "step.completed",
        "run.succeeded",
    ]
    assert stored[4].message == "from a thread: Zoë" and stored[4].step == "prepare"


async def test_worker_that_lost_its_lease_stops_and_the_new_owner_finishes(
    events: EventLog,
) -> None:
    first = WorkerPool(events, concurrency=1, lease_seconds=0.6, poll_interval=0.05)
    first.start()
    second: WorkerPool | None = None
    try:
        run, _ = await events.create_run("test_slow", {})

        async def started() -> bool:
            return len(await events.read_run(run.id)) >= 5

        await wait_for(started)
        # The first worker's lease is given away, as if it had stalled past expiry.
        await events.release(run.id, 1, first.worker_id)
        second = WorkerPool(events, concurrency=1, lease_seconds=5, poll_interval=0.05)
        second.start()
        done = await finished(events, run.id)
    finally:
        await first.stop()
        if second is not None:
            await second.stop()
    assert done.status == RunStatus.SUCCEEDED and done.attempt == 2
    stored = await events.read_run(run.id, 0, 10_000)
    retry_at = next(i for i, e in enumerate(stored) if e.type == EventType.RUN_RETRYING)
    assert all(e.attempt == 2 for e in stored[retry_at:])
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
    assert not first.running
