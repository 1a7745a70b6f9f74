"""The storage contract: what every EventLog backend must do (SQLite and PostgreSQL).

The `backend` fixture is parametrised so both backends run exactly these tests,
against real databases: a fresh SQLite file, or a fresh PostgreSQL schema on
the local server (`STEPLOG_TEST_POSTGRES` to use another). No mocks.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage import (
    Event,
    EventLog,
    EventType,
    InvalidEvent,
    LeaseLost,
    NewEvent,
    RunFinished,
    RunNotFound,
    RunStatus,
    StorageClosed,
    chain,
    open_log,
)
from tests.conftest import require


class FakeClock:
    """An injectable wall clock, so lease expiry is tested without waiting."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@dataclass(frozen=True)
class Backend:
    """Where one backend's log lives, and a way around steplog to try forbidden writes."""

    url: str
    execute: Callable[..., Awaitable[None]]
    """Run raw SQL (`?` placeholders) on a connection of its own."""
    refused: tuple[type[BaseException], ...]
    """What that raw connection raises when the database refuses a statement."""


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "log.db"

        async def execute_sqlite(sql: str, *args: object) -> None:
            conn = sqlite3.connect(path)
            try:
                conn.execute(sql, args)
            finally:
                conn.close()

        yield Backend(str(path), execute_sqlite, (sqlite3.DatabaseError,))
        return

    import asyncpg

    from storage.postgres import testing

    server = testing.postgres_url_for_tests()
    problem = await testing.unreachable(server)
    require("PostgreSQL", problem is None, f"{problem} (or set STEPLOG_TEST_POSTGRES)")
    async with testing.scratch_schema(server) as url:

        async def execute_postgres(sql: str, *args: object) -> None:
            numbered = iter(range(1, len(args) + 1))
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(re.sub(r"\?", lambda _: f"${next(numbered)}", sql), *args)
            finally:
                await conn.close()

        yield Backend(url, execute_postgres, (asyncpg.PostgresError,))


@pytest.fixture
async def events(backend: Backend, clock: FakeClock) -> AsyncIterator[EventLog]:
    log = open_log(backend.url, clock=clock)
    await log.open()
    yield log
    await log.close()


async def started_run(events: EventLog, **params: object) -> str:
    run, _ = await events.create_run("ticker", dict(params))
    claimed = await events.claim_run("w1", 30, ["ticker"])
    assert claimed is not None and claimed.id == run.id
    return run.id


async def test_create_run_writes_queued_event(events: EventLog) -> None:
    run, created = await events.create_run("ticker", {"count": 3})
    assert created and run.status == RunStatus.QUEUED and run.attempt == 0
    [queued] = await events.read_run(run.id)
    assert (queued.seq, queued.type, queued.attempt) == (1, EventType.RUN_QUEUED, 0)


async def test_idempotency_key_returns_the_same_run(events: EventLog) -> None:
    first, created1 = await events.create_run("ticker", {}, idempotency_key="k1")
    again, created2 = await events.create_run("ticker", {"count": 9}, idempotency_key="k1")
    assert created1 and not created2 and again.id == first.id
    assert len(await events.list_runs()) == 1
    assert len(await events.read_all()) == 1


async def test_concurrent_appends_get_contiguous_seq_and_commit_before_ack(
    events: EventLog,
) -> None:
    run_id = await started_run(events)
    acked = await asyncio.gather(
        *[events.append(NewEvent(run_id, EventType.LOG, 1, message=f"m{i}")) for i in range(500)]
    )
    stored = await events.read_run(run_id, 0, 10_000)
    # Every acknowledged event is readable: acknowledged only after commit.
    assert {e.seq for e in acked} <= {e.seq for e in stored}
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
    assert [e.pos for e in stored] == sorted(e.pos for e in stored)
    assert (await events.get_run(run_id)).last_seq == len(stored) == 502


async def test_hash_chain_links_every_event(events: EventLog) -> None:
    run_id = await started_run(events)
    for i in range(20):
        await events.append(
            NewEvent(run_id, EventType.STEP_PROGRESS, 1, "s", "héllo\n", i, {"i": i})
        )
    prev = chain.GENESIS_HASH
    for e in await events.read_all(0, 1000):
        canonical = chain.canonical_row(
            e.pos, e.run_id, e.seq, e.type, e.step, e.message, e.pct, e.data, e.attempt, e.at
        )
        assert e.hash == chain.link(prev, canonical)
        prev = e.hash


async def test_events_are_append_only_in_the_database(events: EventLog, backend: Backend) -> None:
    run_id = await started_run(events)
    with pytest.raises(backend.refused, match="append-only"):
        await backend.execute("UPDATE events SET message = 'forged' WHERE run_id = ?", run_id)
    with pytest.raises(backend.refused, match="append-only"):
        await backend.execute("DELETE FROM events WHERE run_id = ?", run_id)
    assert len(await events.read_run(run_id)) == 2


async def test_terminal_event_ends_the_run_and_refuses_more(events: EventLog) -> None:
    run_id = await started_run(events)
    await events.append(NewEvent(run_id, EventType.RUN_SUCCEEDED, 1, data={"result": {"ok": True}}))
    run = await events.get_run(run_id)
    assert run.status == RunStatus.SUCCEEDED and run.result == {"ok": True}
    assert run.lease_owner is None
    with pytest.raises(RunFinished):
        await events.append(NewEvent(run_id, EventType.LOG, 1, message="late"))


async def test_failed_event_records_the_error(events: EventLog) -> None:
    run_id = await started_run(events)
    await events.append(NewEvent(run_id, EventType.RUN_FAILED, 1, data={"error": "boom"}))
    run = await events.get_run(run_id)
    assert run.status == RunStatus.FAILED and run.error == "boom"


async def test_unknown_run_is_refused(events: EventLog) -> None:
    with pytest.raises(RunNotFound):
        await events.append(NewEvent("0" * 28, EventType.LOG, 1))
    with pytest.raises(RunNotFound):
        await events.get_run("0" * 28)


async def test_expired_lease_is_reclaimed_with_next_attempt_and_old_writer_fenced(
    events: EventLog, clock: FakeClock
) -> None:
    run_id = await started_run(events)
    assert await events.claim_run("w2", 30, ["ticker"]) is None  # lease still held
    clock.now += 31
    retaken = await events.claim_run("w2", 30, ["ticker"])
    assert retaken is not None and retaken.id == run_id and retaken.attempt == 2
    types = [e.type for e in await events.read_run(run_id)]
    assert types[-2:] == [EventType.RUN_RETRYING, EventType.RUN_STARTED]
    with pytest.raises(LeaseLost):
        await events.append(NewEvent(run_id, EventType.LOG, 1, message="zombie"))
    with pytest.raises(LeaseLost):
        await events.heartbeat(run_id, 1, "w1", 30)
    await events.append(NewEvent(run_id, EventType.LOG, 2, message="new owner"))


async def test_heartbeat_keeps_the_lease(events: EventLog, clock: FakeClock) -> None:
    run_id = await started_run(events)
    clock.now += 20
    await events.heartbeat(run_id, 1, "w1", 30)
    clock.now += 20  # 40 s after the claim, 20 s after the heartbeat
    assert await events.claim_run("w2", 30, ["ticker"]) is None


async def test_release_makes_the_run_claimable_at_once(events: EventLog) -> None:
    run_id = await started_run(events)
    await events.release(run_id, 1, "w1")
    retaken = await events.claim_run("w2", 30, ["ticker"])
    assert retaken is not None and retaken.id == run_id and retaken.attempt == 2


async def test_run_out_of_attempts_fails(events: EventLog, clock: FakeClock) -> None:
    run, _ = await events.create_run("ticker", {}, max_attempts=2)
    for _ in range(2):
        assert await events.claim_run("w", 10, ["ticker"]) is not None
        clock.now += 11
    assert await events.claim_run("w", 10, ["ticker"]) is None
    final = await events.get_run(run.id)
    assert final.status == RunStatus.FAILED and "lease" in (final.error or "")


async def test_claim_only_takes_known_functions(events: EventLog) -> None:
    await events.create_run("scrape", {})
    assert await events.claim_run("w", 10, ["ticker"]) is None
    assert await events.claim_run("w", 10, ["scrape"]) is not None


async def test_reads_page_by_cursor(events: EventLog) -> None:
    run_id = await started_run(events)
    for i in range(10):
        await events.append(NewEvent(run_id, EventType.LOG, 1, message=str(i)))
    page = await events.read_run(run_id, after_seq=5, limit=3)
    assert [e.seq for e in page] == [6, 7, 8]
    head = await events.head()
    assert [e.pos for e in await events.read_all(head - 2)] == [head - 1, head]


async def test_commit_listener_is_told_after_commit(events: EventLog) -> None:
    run_id = await started_run(events)
    seen: list[int] = []
    events.add_commit_listener(seen.append)
    event = await events.append(NewEvent(run_id, EventType.LOG, 1))
    assert seen and seen[-1] >= event.pos
    events.remove_commit_listener(seen.append)


class Commits:
    """A commit observer that keeps what it was told: (events added, append waits) per commit."""

    def __init__(self) -> None:
        self.seen: list[tuple[list[Event], list[float]]] = []

    def __call__(self, added: Sequence[Event], waits: Sequence[float]) -> None:
        self.seen.append((list(added), list(waits)))

    @property
    def added(self) -> list[Event]:
        return [event for added, _ in self.seen for event in added]

    @property
    def waits(self) -> list[float]:
        return [wait for _, waits in self.seen for wait in waits]


async def test_commit_observers_see_each_commit_and_only_acknowledged_appends(
    events: EventLog,
) -> None:
    """What `/metrics` counts (events appended, append latency) and the run log lines show."""
    commits = Commits()
    events.add_commit_observer(commits)
    run_id = await started_run(events)
    await asyncio.gather(
        *[events.append(NewEvent(run_id, EventType.LOG, 1, message=f"m{i}")) for i in range(5)]
    )
    with pytest.raises(LeaseLost):  # refused: neither an event nor an append latency
        await events.append(NewEvent(run_id, EventType.LOG, 2, message="fenced"))
    events.remove_commit_observer(commits)
    await events.append(NewEvent(run_id, EventType.LOG, 1, message="not observed"))

    stored = await events.read_run(run_id)
    assert commits.added == stored[:-1]  # every event, as stored, in pos order
    # create_run and claim_run commit events but are not append() calls: no wait.
    assert commits.seen[0] == ([stored[0]], []) and stored[0].type == EventType.RUN_QUEUED
    assert commits.seen[1] == ([stored[1]], []) and stored[1].type == EventType.RUN_STARTED
    assert len(commits.waits) == 5 and all(0 <= wait < 10 for wait in commits.waits)


async def test_a_failing_commit_observer_does_not_stop_the_writer(events: EventLog) -> None:
    def broken(added: Sequence[Event], waits: Sequence[float]) -> None:
        raise RuntimeError("observer bug")

    commits = Commits()
    events.add_commit_observer(broken)
    events.add_commit_observer(commits)
    run_id = await started_run(events)
    event = await events.append(NewEvent(run_id, EventType.LOG, 1))
    assert commits.added[-1] == event and len(commits.waits) == 1
    assert (await events.get_run(run_id)).last_seq == event.seq


async def test_commit_observers_see_only_their_own_instance_commits(
    backend: Backend, clock: FakeClock
) -> None:
    """Two processes on one database each count their own appends, never the other's."""
    first, second = open_log(backend.url, clock=clock), open_log(backend.url, clock=clock)
    await first.open()
    await second.open()
    try:
        commits = Commits()
        first.add_commit_observer(commits)
        run_id = await started_run(second)
        await second.append(NewEvent(run_id, EventType.LOG, 1, message="theirs"))
        mine = await first.append(NewEvent(run_id, EventType.LOG, 1, message="mine"))
        assert commits.added == [mine] and len(commits.waits) == 1
    finally:
        await first.close()
        await second.close()


async def test_run_counts_count_runs_by_status(events: EventLog) -> None:
    assert await events.run_counts() == {}
    done = await started_run(events)
    await events.append(NewEvent(done, EventType.RUN_SUCCEEDED, 1))
    await started_run(events)
    await events.create_run("ticker", {})
    assert await events.run_counts() == {"succeeded": 1, "running": 1, "queued": 1}


async def test_check_writable_commits_without_touching_runs_or_events(events: EventLog) -> None:
    """`/readyz`'s write check: through the writer (with appends), yet no event, no wake-up."""
    run_id = await started_run(events)
    head, run = await events.head(), await events.get_run(run_id)
    woken: list[int] = []
    commits = Commits()
    events.add_commit_listener(woken.append)
    events.add_commit_observer(commits)
    await events.check_writable()
    await events.check_writable()  # the probe row already exists: updated, not refused
    assert await events.head() == head and await events.get_run(run_id) == run
    assert woken == [] and commits.seen == []

    # Queued together with appends, the probe commits in their batch and moves none of them.
    appended = await asyncio.gather(
        events.check_writable(),
        *[events.append(NewEvent(run_id, EventType.LOG, 1, message=f"m{i}")) for i in range(4)],
        events.check_writable(),
    )
    assert [e.seq for e in appended[1:-1]] == [3, 4, 5, 6]
    assert commits.added == appended[1:-1] and len(commits.waits) == 4
    events.remove_commit_listener(woken.append)
    events.remove_commit_observer(commits)
    await events.close()
    with pytest.raises(StorageClosed):
        await events.check_writable()


async def test_secret_is_stable(events: EventLog) -> None:
    first = await events.secret("run-token")
    assert len(first) == 32 and await events.secret("run-token") == first


async def test_rotating_a_secret_replaces_it_for_good(backend: Backend) -> None:
    """`steplog tokens rotate`: the new value is what every later read gets, also after
    reopening; other secrets are left alone."""
    log = open_log(backend.url)
    await log.open()
    first = await log.secret("run-token")
    other = await log.secret("other")
    rotated = await log.rotate_secret("run-token")
    assert len(rotated) == 32 and rotated != first
    assert await log.secret("run-token") == rotated and await log.secret("other") == other
    await log.close()
    reopened = open_log(backend.url)
    await reopened.open()
    assert await reopened.secret("run-token") == rotated
    assert await reopened.rotate_secret("never-created") == await reopened.secret("never-created")
    await reopened.close()


async def test_reopening_keeps_everything(backend: Backend, clock: FakeClock) -> None:
    path = backend.url
    log = open_log(path, clock=clock)
    await log.open()
    run_id = await started_run(log)
    await log.append(NewEvent(run_id, EventType.LOG, 1, message="kept"))
    head = await log.head()
    await log.close()
    again = open_log(path, clock=clock)
    await again.open()
    assert await again.head() == head
    event = await again.append(NewEvent(run_id, EventType.LOG, 1, message="after"))
    assert event.pos == head + 1 and event.seq == 4
    await again.close()


async def test_unknown_event_type_is_refused(events: EventLog) -> None:
    run_id = await started_run(events)
    with pytest.raises(InvalidEvent):
        await events.append(NewEvent(run_id, "made.up", 1))
    assert len(await events.read_run(run_id)) == 2


TRICKY = [
    "plain",
    "Zoë — 東京 🚀",
    'quote " backslash \\ slash /',
    "line\nbreak\r\ncr\ttab",
    "nul\x00and\x01\x1f controls",
    "\u2028\u2029 separators",
    "",
]


async def test_envelopes_built_by_the_backend_equal_the_python_envelope(events: EventLog) -> None:
    from storage.envelope import envelope

    run_id = await started_run(events)
    for i, text in enumerate(TRICKY):
        step = None if i % 2 else text.replace("\x00", "")  # PostgreSQL refuses NUL in step
        message = text.replace("\x00", "")
        await events.append(
            NewEvent(run_id, EventType.STEP_PROGRESS, 1, step, message, i * 12.5, {"t": text})
        )
    stored = await events.read_run(run_id)
    built = await events.read_run_envelopes(run_id)
    assert [(seq, kind) for seq, kind, _ in built] == [(e.seq, e.type) for e in stored]
    for (_, _, text), event in zip(built, stored, strict=True):
        assert json.loads(text) == json.loads(envelope(event))
        assert "\n" not in text and "\r" not in text


async def test_two_writers_on_one_database_share_seq_chain_and_fencing(
    backend: Backend, clock: FakeClock
) -> None:
    """Two logs on one database (as two processes have): each sees what the other wrote.

    A writer keeps the chain head and run states between its transactions; this
    proves it notices the other writer's commits (the next seq, pos and hash, and a
    lease the other one took over) instead of trusting what it remembered.
    """
    first, second = open_log(backend.url, clock=clock), open_log(backend.url, clock=clock)
    await first.open()
    await second.open()
    try:
        run_id = await started_run(first)
        written = []
        for i in range(6):
            log = first if i % 2 == 0 else second
            written.append(await log.append(NewEvent(run_id, EventType.LOG, 1, message=f"m{i}")))
        assert [e.seq for e in written] == [3, 4, 5, 6, 7, 8]
        stored = await second.read_all(0, 1000)
        assert [e.pos for e in stored] == list(range(1, len(stored) + 1))
        prev = chain.GENESIS_HASH
        for e in stored:
            canonical = chain.canonical_row(
                e.pos, e.run_id, e.seq, e.type, e.step, e.message, e.pct, e.data, e.attempt, e.at
            )
            assert e.hash == chain.link(prev, canonical)
            prev = e.hash
        clock.now += 31  # the first writer's lease expires; the second takes the run over
        retaken = await second.claim_run("w2", 30, ["ticker"])
        assert retaken is not None and retaken.attempt == 2
        with pytest.raises(LeaseLost):
            await first.append(NewEvent(run_id, EventType.LOG, 1, message="zombie"))
        event = await first.append(NewEvent(run_id, EventType.LOG, 2, message="new owner"))
        assert event.seq == (await second.get_run(run_id)).last_seq
    finally:
        await first.close()
        await second.close()
