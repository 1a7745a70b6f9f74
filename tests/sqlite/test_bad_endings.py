"""A run's end with text the log cannot take as it is (a real SQLite log, no server).

A result the log refuses fails the run with the refusal's reason; an exception
whose message holds a lone surrogate or NUL still fails the run, its text made
storable (U+FFFD), and the worker slot goes on to the next run.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from functions import registry
from functions.context import Context
from functions.registry import function
from functions.worker import WorkerPool
from storage import EventLog, EventType, Run, RunStatus
from tests.sqlite.conftest import finished

registry.load()


class Empty(BaseModel):
    pass


@function("test_unstorable_result", params=Empty, max_attempts=1)
async def unstorable_result(ctx: Context, params: Empty) -> dict[str, Any]:
    return {"text": "lone \ud800"}


@function("test_unstorable_error", params=Empty, max_attempts=1)
async def unstorable_error(ctx: Context, params: Empty) -> None:
    async with ctx.step("explode", "Exploding"):
        raise ValueError("bad \udfff and \x00 text")


async def run_to_the_end(events: EventLog, function_name: str) -> Run:
    """Run one `function_name` run on a one-slot pool; the slot must still be alive."""
    pool = WorkerPool(events, concurrency=1, poll_interval=0.05)
    pool.start()
    try:
        run, _ = await events.create_run(function_name, {})
        pool.notify()
        done: Run = await finished(events, run.id, timeout=20)
        assert all(not slot.done() for slot in pool._slots), "a worker slot died"
    finally:
        await pool.stop()
    return done


async def test_a_result_the_log_refuses_fails_the_run_with_the_reason(events: EventLog) -> None:
    done = await run_to_the_end(events, "test_unstorable_result")
    assert done.status == RunStatus.FAILED
    assert (done.error or "").startswith(
        "InvalidEvent: data['result']['text'] contains a lone surrogate (U+D800) at index 5"
    )
    last = (await events.read_run(done.id))[-1]
    assert last.type == EventType.RUN_FAILED and last.message == done.error


async def test_an_error_text_the_log_cannot_store_is_stored_as_well_as_it_can_be(
    events: EventLog,
) -> None:
    done = await run_to_the_end(events, "test_unstorable_error")
    assert done.status == RunStatus.FAILED
    assert done.error == "ValueError: bad \ufffd and \ufffd text"
    stored = await events.read_run(done.id)
    assert [e.type for e in stored[-2:]] == [EventType.STEP_FAILED, EventType.RUN_FAILED]
    assert stored[-2].message == "Exploding failed: ValueError: bad \ufffd and \ufffd text"
