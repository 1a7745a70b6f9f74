"""The storage contract, continued: cancelling, retrying later and listing runs.

Same fixtures as `test_storage_contract.py` (a fresh SQLite file and a fresh
PostgreSQL schema, the same tests on both), for the run operations the worker
pool and the API rely on that the first module does not cover.
"""

from __future__ import annotations

import pytest

from storage import EventLog, EventType, LeaseLost, NewEvent, RunFinished, RunStatus
from tests.sqlite import test_storage_contract as contract
from tests.sqlite.test_storage_contract import FakeClock, started_run

# The contract's fixtures, so both modules run against the same two backends.
backend = contract.backend
clock = contract.clock
events = contract.events


async def test_cancel_a_queued_run_ends_it_at_once(events: EventLog) -> None:
    run, _ = await events.create_run("ticker", {})
    assert await events.cancel_run(run.id, "not wanted") is True
    ended = await events.get_run(run.id)
    assert ended.status == RunStatus.CANCELLED and ended.finished_at is not None
    last = (await events.read_run(run.id))[-1]
    assert (last.type, last.seq) == (EventType.RUN_CANCELLED, 2)
    assert "not wanted" in (last.message or "")
    assert await events.claim_run("w", 30, ["ticker"]) is None  # nothing left to claim


async def test_cancel_a_running_run_fences_its_worker(events: EventLog) -> None:
    run_id = await started_run(events)
    assert await events.cancel_run(run_id, "stop") is True
    with pytest.raises((RunFinished, LeaseLost)):
        await events.append(NewEvent(run_id, EventType.LOG, 1, message="too late"))
    with pytest.raises((RunFinished, LeaseLost)):
        await events.heartbeat(run_id, 1, "w1", 30)
    assert (await events.get_run(run_id)).status == RunStatus.CANCELLED


async def test_cancel_an_ended_run_changes_nothing(events: EventLog) -> None:
    run_id = await started_run(events)
    await events.append(NewEvent(run_id, EventType.RUN_SUCCEEDED, 1, data={"ok": True}))
    before = await events.read_run(run_id)
    assert await events.cancel_run(run_id, "too late") is False
    assert await events.read_run(run_id) == before
    assert (await events.get_run(run_id)).status == RunStatus.SUCCEEDED


async def test_retry_later_queues_the_run_after_its_delay(
    events: EventLog, clock: FakeClock
) -> None:
    run_id = await started_run(events)
    await events.retry_later(run_id, 1, 60, "TimeoutError: upstream slow")
    queued = await events.get_run(run_id)
    assert queued.status == RunStatus.QUEUED and queued.lease_owner is None
    assert queued.error == "TimeoutError: upstream slow"
    last = (await events.read_run(run_id))[-1]
    assert last.type == EventType.RUN_RETRYING and last.attempt == 1
    assert await events.claim_run("w2", 30, ["ticker"]) is None  # still backing off
    clock.now += 61
    again = await events.claim_run("w2", 30, ["ticker"])
    assert again is not None and again.id == run_id and again.attempt == 2
    with pytest.raises(LeaseLost):  # the first attempt's writes are fenced
        await events.append(NewEvent(run_id, EventType.LOG, 1, message="zombie"))


async def test_retry_later_is_fenced_by_attempt(events: EventLog, clock: FakeClock) -> None:
    run_id = await started_run(events)
    clock.now += 31
    assert await events.claim_run("w2", 30, ["ticker"]) is not None  # attempt 2 now
    with pytest.raises(LeaseLost):
        await events.retry_later(run_id, 1, 0, "from the lost attempt")
    assert (await events.get_run(run_id)).status == RunStatus.RUNNING


async def test_a_refunded_retry_does_not_use_up_an_attempt(
    events: EventLog, clock: FakeClock
) -> None:
    run, _ = await events.create_run("ticker", {}, max_attempts=1)
    assert await events.claim_run("w", 30, ["ticker"]) is not None
    await events.retry_later(run.id, 1, 0, "StorageFull", refund=True)
    assert (await events.get_run(run.id)).max_attempts == 2
    again = await events.claim_run("w", 30, ["ticker"])
    assert again is not None and again.attempt == 2 and again.status == RunStatus.RUNNING


async def test_list_runs_filters_by_status_function_and_pages(
    events: EventLog, clock: FakeClock
) -> None:
    created = []
    for function in ["ticker", "scrape", "ticker", "ticker", "scrape"]:
        run, _ = await events.create_run(function, {})
        created.append(run)
        clock.now += 1  # ids follow creation time: a stable newest-first order
    newest_first = [run.id for run in reversed(created)]
    claimed = await events.claim_run("w", 30, ["ticker"])  # the oldest ticker run
    assert claimed is not None and claimed.id == created[0].id
    assert await events.cancel_run(created[1].id, "no")

    assert [r.id for r in await events.list_runs()] == newest_first
    assert [r.id for r in await events.list_runs(limit=2)] == newest_first[:2]
    assert [r.id for r in await events.list_runs(before=newest_first[1])] == newest_first[2:]
    tickers = [r.id for r in await events.list_runs(function="ticker")]
    assert tickers == [created[3].id, created[2].id, created[0].id]
    assert [r.id for r in await events.list_runs(status="running")] == [created[0].id]
    assert [r.id for r in await events.list_runs(status="cancelled")] == [created[1].id]
    queued_tickers = await events.list_runs(status="queued", function="ticker")
    assert [r.id for r in queued_tickers] == [created[3].id, created[2].id]
    paged = await events.list_runs(status="queued", function="ticker", before=created[3].id)
    assert [r.id for r in paged] == [created[2].id]
    assert await events.list_runs(function="nothing") == []
    assert await events.list_runs(status="succeeded") == []
    assert await events.list_runs(before=created[0].id) == []
