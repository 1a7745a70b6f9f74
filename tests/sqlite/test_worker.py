"""The worker pool and Context against a real SQLite log (no server needed)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import BaseModel

from functions import registry
from functions.context import Context, SyncContext
from functions.errors import backoff
from functions.registry import function
from functions.worker import WorkerPool
from storage import EventLog, EventType, InvalidEvent, RunStatus, open_log
from tests.sqlite.conftest import finished
from tests.support import postgres as testing
from tests.support.wait import wait_for

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


# --- faults: no fault of a run or of the log ends a worker slot -------------------------------


class Oddity(BaseException):
    """Neither an `Exception` nor a signal: nothing a worker is written to expect."""


@function("test_oddity", params=Empty, max_attempts=1)
async def raises_an_oddity(ctx: Any, params: Empty) -> None:
    async with ctx.step("odd", "doing something odd"):
        raise Oddity("not an Exception")


@function("test_sync_exit", params=Empty, max_attempts=1)
def exits_in_a_thread(ctx: SyncContext, params: Empty) -> None:
    with ctx.step("leave", "leaving"):
        raise SystemExit(3)


@function("test_cancels_itself", params=Empty, max_attempts=1)
async def cancels_itself(ctx: Any, params: Empty) -> None:
    task = asyncio.create_task(asyncio.sleep(60))
    task.cancel()
    await task


class Fault:
    """A real storage fault: a trigger in the log's own database refuses some of a run's
    events, which aborts the whole write transaction they are in."""

    def __init__(self, backend: str, target: str) -> None:
        self.backend = backend
        self.target = target  # the SQLite file, or the PostgreSQL URL with its schema

    async def refuse(self, run_id: str, *types: str) -> None:
        kinds = ", ".join(f"'{t}'" for t in types)
        when = f"NEW.run_id = '{run_id}' AND NEW.type IN ({kinds})"
        if self.backend == "sqlite":
            self._sqlite(
                f"CREATE TRIGGER refuse_for_test BEFORE INSERT ON events WHEN {when}"
                " BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
            )
        else:
            await self._postgres(
                "CREATE FUNCTION refuse_for_test() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$;"
                " CREATE TRIGGER refuse_for_test BEFORE INSERT ON events FOR EACH ROW"
                f" WHEN ({when}) EXECUTE FUNCTION refuse_for_test()"
            )

    async def allow(self) -> None:
        if self.backend == "sqlite":
            self._sqlite("DROP TRIGGER IF EXISTS refuse_for_test")
        else:
            await self._postgres("DROP TRIGGER IF EXISTS refuse_for_test ON events")

    def _sqlite(self, sql: str) -> None:
        db = sqlite3.connect(self.target, timeout=30, isolation_level=None)
        try:
            db.execute(sql)
        finally:
            db.close()

    async def _postgres(self, sql: str) -> None:
        conn = await asyncpg.connect(self.target)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()


@pytest.fixture
def fault(tmp_path: Path) -> Fault:
    return Fault("sqlite", str(tmp_path / "unit.db"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.needs("postgres"))])
async def faulty_log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """(log, fault) on each backend."""
    if request.param == "sqlite":
        target = str(tmp_path / "unit.db")
        log = open_log(target)
        await log.open()
        yield log, Fault("sqlite", target)
        await log.close()
        return
    async with testing.scratch_schema(testing.postgres_url_for_tests()) as url:
        log = open_log(url)
        await log.open()
        yield log, Fault("postgres", url)
        await log.close()


def worker_records(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "steplog.worker" and text in r.getMessage()]


def slots_alive(pool: WorkerPool) -> int:
    """Counted from the slot tasks themselves, not from what the pool reports."""
    return sum(not task.done() for task in pool._slots)


async def types_of(events: EventLog, run_id: str) -> list[str]:
    return [e.type for e in await events.read_run(run_id)]


async def runs_next(pool: WorkerPool, events: EventLog) -> None:
    """The pool claims and runs one more run to success."""
    run, _ = await events.create_run("ticker", {"count": 2, "interval_ms": 0})
    pool.notify()
    done = await finished(events, run.id)
    assert done.status == RunStatus.SUCCEEDED, done


async def test_a_storage_fault_in_a_step_hands_the_run_back_for_another_attempt(
    faulty_log: Any,
) -> None:
    events, fault = faulty_log
    run, _ = await events.create_run("ticker", {"count": 3, "interval_ms": 0})
    await fault.refuse(run.id, "step.progress")
    pool = WorkerPool(events, concurrency=1, poll_interval=0.05, retry_backoff=0.05)
    pool.start()
    try:

        async def retried() -> Any:
            stored = await events.read_run(run.id)
            if stored[-1].type == EventType.RUN_FAILED:
                raise AssertionError(f"failed instead of retried: {stored[-1].message}")
            return next((e for e in stored if e.type == EventType.RUN_RETRYING), None)

        retry = await wait_for(retried)
        assert "LogUnavailable: the event log could not record step.progress" in retry.message
        assert "injected fault" in retry.message
        await fault.allow()
        done = await finished(events, run.id)
        assert done.status == RunStatus.SUCCEEDED and done.attempt >= 2, done
        await runs_next(pool, events)
        assert slots_alive(pool) == 1
    finally:
        await pool.stop()


async def test_a_slot_keeps_settling_until_the_log_takes_it(
    events: EventLog, fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="steplog.worker")
    run, _ = await events.create_run("ticker", {"count": 3, "interval_ms": 0})
    await fault.refuse(run.id, "step.progress", "run.retrying", "run.failed")
    pool = WorkerPool(events, concurrency=1, poll_interval=0.05, retry_backoff=0.05)
    pool.start()
    try:

        async def tried_twice_or_died() -> bool:
            tries = worker_records(caplog, "settle try")
            return len(tries) >= 2 or slots_alive(pool) == 0

        await wait_for(tried_twice_or_died)
        assert slots_alive(pool) == 1, "the slot died of a failed settle"
        assert (await events.get_run(run.id)).status == RunStatus.RUNNING
        await fault.allow()
        done = await finished(events, run.id)
        assert done.status == RunStatus.SUCCEEDED and done.attempt == 2, done
        await runs_next(pool, events)
    finally:
        await pool.stop()
    failures = worker_records(caplog, "could not settle")
    assert len(failures) == 1 and failures[0].levelno == logging.WARNING, failures
    assert run.id in failures[0].getMessage()
    assert worker_records(caplog, "settled after")


async def test_a_run_that_cannot_be_settled_is_left_to_its_lease(
    events: EventLog, fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="steplog.worker")
    run, _ = await events.create_run(
        "ticker", {"count": 3, "interval_ms": 0, "fail_at": 2}, max_attempts=1
    )
    await fault.refuse(run.id, "run.failed")
    pool = WorkerPool(events, concurrency=1, lease_seconds=0.5, poll_interval=0.05)
    pool.start()
    try:

        async def given_up_or_died() -> bool:
            return bool(worker_records(caplog, "not settled after")) or slots_alive(pool) == 0

        await wait_for(given_up_or_died)
        assert slots_alive(pool) == 1, "the slot died of a failed settle"
        # Once the lease expires, a claim fails the run (no attempts left); the log
        # refuses that too until the fault goes, and the slot keeps trying.
        await fault.allow()
        done = await finished(events, run.id)
        assert done.status == RunStatus.FAILED and "lease" in (done.error or ""), done
        await runs_next(pool, events)
    finally:
        await pool.stop()


async def test_a_failing_claim_never_ends_a_slot_and_is_logged_once(
    events: EventLog, fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="steplog.worker")
    run, _ = await events.create_run("ticker", {"count": 1, "interval_ms": 0})
    await fault.refuse(run.id, "run.started")  # every claim of it rolls back
    pool = WorkerPool(events, concurrency=2, poll_interval=0.02)
    pool.start()
    try:

        async def failed_often() -> bool:
            return len(worker_records(caplog, "claiming a run failed")) >= 6

        await wait_for(failed_often)
        loud = [
            r
            for r in worker_records(caplog, "claiming a run failed")
            if r.levelno >= logging.WARNING
        ]
        assert len(loud) == 1, [r.getMessage() for r in loud]
        assert slots_alive(pool) == 2
        await fault.allow()
        done = await finished(events, run.id)
        assert done.status == RunStatus.SUCCEEDED
        assert worker_records(caplog, "claiming runs works again")
    finally:
        await pool.stop()


async def test_a_closed_log_does_not_end_the_slots(
    events: EventLog, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="steplog.worker")
    pool = WorkerPool(events, concurrency=2, poll_interval=0.02)
    pool.start()
    try:
        await events.close()

        async def claims_refused() -> bool:
            return len(worker_records(caplog, "claiming a run failed")) >= 2

        await wait_for(claims_refused)
        await events.open()
        await runs_next(pool, events)
        assert slots_alive(pool) == 2
    finally:
        await pool.stop()


@pytest.mark.parametrize(
    ("function", "error", "step_failed"),
    [
        ("test_oddity", "Oddity: not an Exception", True),
        ("test_sync_exit", "SystemExit: 3", True),
        ("test_cancels_itself", "CancelledError", False),
    ],
)
async def test_a_function_that_ends_badly_fails_its_run_and_the_slot_goes_on(
    events: EventLog, function: str, error: str, step_failed: bool
) -> None:
    pool = WorkerPool(events, concurrency=1, poll_interval=0.05)
    pool.start()
    try:
        run, _ = await events.create_run(function, {}, max_attempts=1)
        pool.notify()

        async def failed_or_died() -> Any:
            if slots_alive(pool) == 0:
                raise AssertionError("the slot died")
            found = await events.get_run(run.id)
            return found if found.status == RunStatus.FAILED else None

        done = await wait_for(failed_or_died)  # well within the lease: settled by its slot
        assert error in (done.error or ""), done
        assert done.error.startswith("FunctionAborted: "), done
        types = await types_of(events, run.id)
        assert types[-1] == EventType.RUN_FAILED
        assert (EventType.STEP_FAILED in types) == step_failed, types
        await runs_next(pool, events)
        assert slots_alive(pool) == 1
    finally:
        await pool.stop()


# --- the Context's calls fail with errors that say what is wrong ------------------------------


async def claimed(events: EventLog, function: str = "ticker") -> Context:
    await events.create_run(function, {})
    run = await events.claim_run("test-worker", 30, [function])
    assert run is not None
    return Context(events, run)


async def test_context_refuses_bad_arguments_before_writing(events: EventLog) -> None:
    ctx = await claimed(events)
    before = await types_of(events, ctx.run_id)
    with pytest.raises(TypeError, match="pct must be a number between 0 and 100, not str"):
        await ctx.progress("50")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pct must be between 0 and 100, not nan"):
        await ctx.progress(float("nan"))
    with pytest.raises(TypeError, match="message must be a str or None, not list"):
        await ctx.log(["not", "text"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="step must be a str or None, not int"):
        async with ctx.step(5):  # type: ignore[arg-type]
            pass
    assert await types_of(events, ctx.run_id) == before
    await ctx.log("still fine")
    assert (await types_of(events, ctx.run_id))[-1] == EventType.LOG


async def test_data_the_log_cannot_store_is_the_functions_error(events: EventLog) -> None:
    ctx = await claimed(events)
    circular: dict[str, Any] = {}
    circular["self"] = circular
    with pytest.raises(InvalidEvent, match=r"data cannot be (stored|encoded) as JSON"):
        await ctx.log("circular", data=circular)
    await ctx.log("tuple keys", data={(1, 2): "x"})  # stored with the key as text
    await ctx.log("still fine")


async def test_context_names_the_log_failing(events: EventLog, fault: Fault) -> None:
    from functions.errors import LogUnavailable

    ctx = await claimed(events)
    await fault.refuse(ctx.run_id, "log")
    with pytest.raises(LogUnavailable) as raised:
        await ctx.log("refused")
    assert f"the event log could not record log for run {ctx.run_id}" in str(raised.value)
    assert "IntegrityError: injected fault" in str(raised.value)
    assert isinstance(raised.value.__cause__, sqlite3.IntegrityError)
    await fault.allow()
    await ctx.log("taken")


async def test_a_sync_context_after_its_worker_stopped_raises_a_clear_error(
    events: EventLog,
) -> None:
    from functions.errors import LogUnavailable

    ctx = await claimed(events)
    stopped = asyncio.new_event_loop()
    stopped.close()
    sync = SyncContext(ctx, stopped)
    with pytest.raises(LogUnavailable, match="has stopped; nothing more can be recorded"):
        await asyncio.to_thread(sync.log, "too late")


@pytest.mark.timeout(20)
async def test_a_sync_context_call_on_the_event_loop_thread_is_refused(events: EventLog) -> None:
    ctx = await claimed(events)
    sync = SyncContext(ctx, asyncio.get_running_loop())
    with pytest.raises(RuntimeError, match="cannot be called on the event loop's own thread"):
        sync.log("would wait for the loop it blocks")


async def test_a_sync_context_call_cancelled_by_the_stopping_loop_raises_a_clear_error(
    events: EventLog, tmp_path: Path
) -> None:
    from functions.errors import LogUnavailable

    ctx = await claimed(events)
    sync = SyncContext(ctx, asyncio.get_running_loop())
    # Another connection holds the write lock, so the append waits in the writer...
    blocker = sqlite3.connect(tmp_path / "unit.db", timeout=30, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        call = asyncio.create_task(asyncio.to_thread(sync.log, "waiting"))

        async def bridged() -> list[asyncio.Task[Any]]:
            return [
                task
                for task in asyncio.all_tasks()
                if getattr(task.get_coro(), "__qualname__", "") == "Context.log"
            ]

        # ...when the loop cancels the call, as asyncio.run does with every task left.
        for task in await wait_for(bridged):
            task.cancel()
        with pytest.raises(LogUnavailable, match="stopped before the event was recorded"):
            await call
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def test_back_off_stays_capped_however_long_an_outage_lasts() -> None:
    # A slot backs off by the number of claims failed in a row: an outage of hours
    # must not overflow the float the wait is computed in (which would end the slot).
    assert backoff(1, 0.5, 5.0) == 0.5
    assert backoff(4, 0.5, 5.0) == 4.0
    assert backoff(5_000, 0.5, 5.0) == 5.0
