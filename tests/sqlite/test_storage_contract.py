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
    IdempotencyConflict,
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
from tests.jsonstrict import strict_loads


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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.needs("postgres"))])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "log.db"

        async def execute_sqlite(sql: str, *args: object) -> None:
            conn = sqlite3.connect(path)
            try:
                with conn:  # commits what the database accepts
                    conn.execute(sql, args)
            finally:
                conn.close()

        yield Backend(str(path), execute_sqlite, (sqlite3.DatabaseError,))
        return

    import asyncpg

    from tests.support import postgres as testing

    async with testing.scratch_schema(testing.postgres_url_for_tests()) as url:

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


SECRET_PARAMS = {"url": "https://example.org/in/ada", "credentials": {"password": "hunter2-xyz"}}


async def test_idempotency_key_replayed_returns_the_run_and_other_params_conflict(
    events: EventLog,
) -> None:
    params = {"count": 2, "tags": {"a": 1, "b": [1, 2]}}
    first, created1 = await events.create_run("ticker", params, idempotency_key="k1")
    # The same request, keys in another order: a replay, the same run.
    same = {"tags": {"b": [1, 2], "a": 1}, "count": 2}
    again, created2 = await events.create_run("ticker", same, idempotency_key="k1")
    assert created1 and not created2 and again == first

    with pytest.raises(IdempotencyConflict) as caught:
        await events.create_run("ticker", {**params, "count": 9}, idempotency_key="k1")
    conflict = caught.value
    assert (conflict.key, conflict.differs, conflict.status) == ("k1", "params", 422)
    assert "k1" in conflict.detail and "params" in conflict.detail
    assert len(await events.list_runs()) == 1
    assert len(await events.read_all()) == 1


async def test_idempotency_key_reused_for_another_function_conflicts(events: EventLog) -> None:
    first, _ = await events.create_run("scrape", SECRET_PARAMS, idempotency_key="k2")
    with pytest.raises(IdempotencyConflict) as caught:
        await events.create_run("ticker", SECRET_PARAMS, idempotency_key="k2")
    assert (caught.value.differs, caught.value.existing_function) == ("function", "scrape")
    assert "ticker" in caught.value.detail and "scrape" in caught.value.detail
    # Other credentials: a params conflict that never shows the params.
    other = {**SECRET_PARAMS, "credentials": {"password": "hunter3-xyz"}}
    with pytest.raises(IdempotencyConflict) as caught:
        await events.create_run("scrape", other, idempotency_key="k2")
    assert caught.value.differs == "params"
    shown = f"{caught.value} {vars(caught.value)}"
    assert "hunter" not in shown
    # The fingerprint kept with the key is a hash, never the params.
    stored = await events.get_run(first.id)
    assert stored.idempotency_fingerprint is not None
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", stored.idempotency_fingerprint)
    assert [run.id for run in await events.list_runs()] == [first.id]
    assert len(await events.read_all()) == 1


async def test_a_key_stored_without_fingerprint_matches_its_function_only(
    events: EventLog, backend: Backend
) -> None:
    """Runs keyed before fingerprints existed (an upgraded database) have none: their
    params cannot be compared, so a replay for the same function is taken as one."""
    first, _ = await events.create_run("ticker", {"count": 1}, idempotency_key="k3")
    await backend.execute(
        "UPDATE runs SET idempotency_fingerprint = NULL WHERE idempotency_key = ?", "k3"
    )
    again, created = await events.create_run("ticker", {"count": 5}, idempotency_key="k3")
    assert not created and again.id == first.id
    with pytest.raises(IdempotencyConflict) as caught:
        await events.create_run("scrape", {"count": 1}, idempotency_key="k3")
    assert caught.value.differs == "function"
    assert len(await events.read_all()) == 1


async def test_an_existing_database_upgrades_and_keeps_its_keyed_runs(
    backend: Backend, clock: FakeClock
) -> None:
    """A log made by the previous schema (runs with keys, no fingerprint column) opens,
    upgrades in place, and its keys keep working under the rule above."""
    await create_previous_schema(backend.url)
    await backend.execute(
        "INSERT INTO runs (id, function, params, status, attempt, max_attempts, last_seq,"
        " idempotency_key, created_at, updated_at)"
        " VALUES (?, 'ticker', '{\"count\":1}', 'queued', 0, 3, 0, 'old-key', ?, ?)",
        "0" * 28,
        "2026-11-01T00:00:00.000000Z",
        "2026-11-01T00:00:00.000000Z",
    )
    log = open_log(backend.url, clock=clock)
    await log.open()
    try:
        old, created = await log.create_run("ticker", {"count": 2}, idempotency_key="old-key")
        assert not created and old.id == "0" * 28 and old.idempotency_fingerprint is None
        with pytest.raises(IdempotencyConflict):
            await log.create_run("scrape", {}, idempotency_key="old-key")
        new, created = await log.create_run("ticker", {"count": 2}, idempotency_key="new-key")
        assert created and new.idempotency_fingerprint is not None
        with pytest.raises(IdempotencyConflict):
            await log.create_run("ticker", {"count": 3}, idempotency_key="new-key")
    finally:
        await log.close()


PREVIOUS_SCHEMA = {"sqlite": 2, "postgres": 1}
"""Each backend's last schema version before idempotency fingerprints."""


async def create_previous_schema(url: str) -> None:
    """An empty log as the previous steplog left it, built from its own migrations."""
    if url.startswith("postgresql://"):
        import asyncpg

        from storage.postgres import migrations as pg_migrations
        from storage.sqlfiles import POSTGRES as QUERIES

        conn = await asyncpg.connect(url)
        try:
            await conn.execute(QUERIES["create_schema_version"])
            for number, name, sql in pg_migrations.available():
                if number <= PREVIOUS_SCHEMA["postgres"]:
                    await conn.execute(sql)
                    await conn.execute(QUERIES["record_migration"], number, name)
        finally:
            await conn.close()
        return
    from storage.sqlite import migrations as sqlite_migrations

    conn = sqlite3.connect(url)
    try:
        for number, sql in sqlite_migrations.available():
            if number <= PREVIOUS_SCHEMA["sqlite"]:
                conn.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version = {number};\nCOMMIT;")
    finally:
        conn.close()


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


async def test_a_claim_returns_the_run_as_it_committed(events: EventLog, clock: FakeClock) -> None:
    """The claimed record comes from the claim itself (no read after it), and is exact."""
    run, _ = await events.create_run("ticker", {"count": 1})
    claimed = await events.claim_run("w1", 30, ["ticker"])
    assert claimed == await events.get_run(run.id)
    assert (claimed.status, claimed.attempt, claimed.lease_owner) == (RunStatus.RUNNING, 1, "w1")
    assert claimed.last_seq == 2 and claimed.started_at is not None
    clock.now += 31
    retaken = await events.claim_run("w2", 30, ["ticker"])
    assert retaken == await events.get_run(run.id)
    assert (retaken.attempt, retaken.lease_owner, retaken.last_seq) == (2, "w2", 4)
    assert retaken.started_at == claimed.started_at


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


# -- one bad write fails alone ---------------------------------------------------------------


def assert_chain(stored: Sequence[Event]) -> None:
    """Every event's hash links it to the one before (read from pos 1 on)."""
    prev = chain.GENESIS_HASH
    for e in stored:
        canonical = chain.canonical_row(
            e.pos, e.run_id, e.seq, e.type, e.step, e.message, e.pct, e.data, e.attempt, e.at
        )
        assert e.hash == chain.link(prev, canonical), f"broken link at pos {e.pos}"
        prev = e.hash


class Unprintable:
    """An object `default=str` cannot turn into text."""

    def __str__(self) -> str:
        raise RuntimeError("no text for \udcff you")


class Surrogate:
    """An object whose text holds a lone surrogate."""

    def __str__(self) -> str:
        return "odd \udcff text"


def circular() -> list[object]:
    value: list[object] = []
    value.append(value)
    return value


# (what the error must name, the bad fields of a NewEvent)
BAD_APPENDS: list[tuple[str, dict[str, object]]] = [
    ("message", {"message": "lone \ud800 surrogate"}),
    ("step", {"step": "\udfff"}),
    ("data", {"data": {"list": ["ok", "bad \udc80"]}}),
    ("data", {"data": {"key \ud83d": 1}}),
    ("data", {"data": Surrogate()}),
    ("data", {"data": Unprintable()}),
    ("data", {"data": circular()}),
    ("data", {"data": 10**5000}),
    ("pct", {"pct": float("nan")}),
    ("pct", {"pct": float("-inf")}),
    ("pct", {"pct": "12"}),
    ("message", {"message": 42}),
    ("step", {"step": b"bytes"}),
]


async def test_an_unwritable_append_is_refused_alone_with_a_clear_error(events: EventLog) -> None:
    """Checked on the caller's side, before it joins a group commit: its neighbours in
    the same transaction commit as if it had never been sent."""
    good, bad = await started_run(events), await started_run(events)
    calls = []
    for i, (_, fields) in enumerate(BAD_APPENDS):
        calls.append(events.append(NewEvent(good, EventType.LOG, 1, message=f"m{i}")))
        calls.append(events.append(NewEvent(bad, EventType.STEP_PROGRESS, 1, **fields)))  # type: ignore[arg-type]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)

    goods, bads = outcomes[::2], outcomes[1::2]
    assert all(isinstance(e, Event) for e in goods), goods
    assert [e.seq for e in goods if isinstance(e, Event)] == list(range(3, 3 + len(goods)))
    for (field, _), refused in zip(BAD_APPENDS, bads, strict=True):
        assert isinstance(refused, InvalidEvent), repr(refused)
        text = str(refused)
        assert text.startswith(field) and text.encode("utf-8"), text  # names it, and prints
    assert len(await events.read_run(bad)) == 2
    assert_chain(await events.read_all(0, 1000))
    after = await events.append(NewEvent(bad, EventType.LOG, 1, message="still writable"))
    assert after.seq == 3


def poison_sql(backend: Backend, run_id: str) -> list[str]:
    """A trigger that makes the database refuse every event of `run_id` (a real failure
    inside the transaction, not one steplog could have seen coming)."""
    if backend.url.startswith("postgres"):
        return [
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF NEW.run_id = '{run_id}' THEN RAISE EXCEPTION 'poisoned for the test'; END IF;"
            " RETURN NEW; END $$",
            "CREATE TRIGGER poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION poison()",
        ]
    return [
        f"CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.run_id = '{run_id}'"
        " BEGIN SELECT RAISE(ABORT, 'poisoned for the test'); END"
    ]


async def test_an_operation_the_database_refuses_fails_alone(
    events: EventLog, backend: Backend
) -> None:
    """Whatever makes one operation of a group commit fail, the others commit."""
    first, poisoned, last = [await started_run(events) for _ in range(3)]
    for sql in poison_sql(backend, poisoned):
        await backend.execute(sql)
    calls = []
    for i in range(20):
        for run_id in (first, poisoned, last):
            calls.append(events.append(NewEvent(run_id, EventType.LOG, 1, message=f"m{i}")))
    calls.insert(31, events.cancel_run(poisoned, "a cancel that writes an event"))
    calls.insert(7, events.create_run("ticker", {"n": 1}))
    calls.append(events.check_writable())
    outcomes = await asyncio.gather(*calls, return_exceptions=True)

    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failed) == 21 and all("poisoned for the test" in str(o) for o in failed), failed
    for run_id in (first, last):
        stored = await events.read_run(run_id)
        assert [e.seq for e in stored] == list(range(1, 23))
        assert [e.message for e in stored[2:]] == [f"m{i}" for i in range(20)]
    assert len(await events.read_run(poisoned)) == 2
    assert len(await events.list_runs()) == 4  # the run created in the same batch
    assert_chain(await events.read_all(0, 1000))
    on_postgres = backend.url.startswith("postgres")
    await backend.execute("DROP TRIGGER poison" + (" ON events" if on_postgres else ""))
    event = await events.append(NewEvent(poisoned, EventType.LOG, 1, message="cured"))
    assert event.seq == 3 and (await events.get_run(poisoned)).last_seq == 3


async def test_numbers_that_are_not_json_are_stored_as_null(events: EventLog) -> None:
    """NaN and ±Infinity become null, as JavaScript's JSON.stringify writes them; what
    is hashed is what is stored, so the chain still verifies."""
    nan, inf = float("nan"), float("inf")
    run_id = await started_run(events)
    value = {"nan": nan, "inf": [inf, -inf, {"deep": (nan,)}], "ok": 1.5, "neg0": -0.0, nan: 1}
    event = await events.append(NewEvent(run_id, EventType.LOG, 1, data=value))
    expected = '{"nan":null,"inf":[null,null,{"deep":[null]}],"ok":1.5,"neg0":-0.0,"NaN":1}'
    assert event.data == expected
    await events.append(NewEvent(run_id, EventType.RUN_SUCCEEDED, 1, data={"result": [nan, 2]}))

    stored = await events.read_run(run_id)
    assert stored[2].data == expected
    assert (await events.get_run(run_id)).result == [None, 2]
    for _, _, text in await events.read_run_envelopes(run_id):
        strict_loads(text)
    assert_chain(await events.read_all(0, 1000))


async def test_text_a_worker_hands_over_is_stored_as_well_as_it_can_be(events: EventLog) -> None:
    """An exception's message or a cancel reason is never refused (that would lose the
    retry or the cancel): what no database can store becomes U+FFFD."""
    retried, cancelled = await started_run(events), await started_run(events)
    await events.retry_later(retried, 1, 0, "ValueError: bad \ud800 and \x00 here")
    assert await events.cancel_run(cancelled, "stop \udfff now")

    retry_event = (await events.read_run(retried))[-1]
    assert "bad \ufffd and \ufffd here" in (retry_event.message or "")
    assert (await events.get_run(retried)).error == "ValueError: bad \ufffd and \ufffd here"
    cancel_event = (await events.read_run(cancelled))[-1]
    assert cancel_event.message == "cancelled: stop \ufffd now"
    assert_chain(await events.read_all(0, 1000))


async def test_a_run_whose_params_cannot_be_stored_is_refused(events: EventLog) -> None:
    with pytest.raises(InvalidEvent, match=r"^params") as refused:
        await events.create_run("ticker", {"text": "\ud800"})
    assert str(refused.value).encode("utf-8")
    assert await events.list_runs() == []
