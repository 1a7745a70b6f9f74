"""The writer's short way for appends (storage/postgres/cached.py), on a real server.

A group of plain appends goes in one statement numbered against the writer's
cache and checked under the append lock. These tests show that a cache gone out
of date (another process appended, or ended the run) never makes an append
different, only slower, and that a short-way statement whose connection is lost
is neither lost nor written twice: the writer finds out under the lock whether
it committed. Several `PostgresEventLog` instances stand in for processes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg
import pytest

from storage import Event, EventType, NewEvent, RunFinished, RunStatus
from storage.audit.verify import verify_log
from storage.postgres.log import PostgresEventLog
from storage.sqlfiles import POSTGRES as QUERIES
from tests.postgres.logs import (
    running_run,
    short_way_outcomes,
    waiting_for_a_lock,
    writer_statements,
)
from tests.support.wait import wait_for


def note(run_id: str, text: str) -> NewEvent:
    return NewEvent(run_id, EventType.LOG, 1, message=text)


async def test_appends_alternating_between_processes_stay_one_chain(
    open_logs: Callable[..., PostgresEventLog], pg_url: str
) -> None:
    """Each process's cache is out of date after the other's append: every append is
    still numbered from the database, gapless, and the chain verifies."""
    first, second = open_logs(), open_logs()
    await first.open()
    await second.open()
    seen = writer_statements(first), writer_statements(second)
    run_id = await running_run(first)
    written = []
    for i in range(6):
        log = first if i % 2 == 0 else second
        written.extend(
            await asyncio.gather(*(log.append(note(run_id, f"{i}.{j}")) for j in range(3)))
        )
    events = await first.read_run(run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.pos for e in events] == list(range(1, len(events) + 1))
    assert sorted(written) == events[-len(written) :]
    for statements in seen:  # each found its cache out of date, and went the long way
        assert "SLSTA" in short_way_outcomes(statements)
    report = await asyncio.to_thread(verify_log, pg_url)
    assert report.ok, report.problems


async def test_a_run_ended_elsewhere_refuses_the_cached_append(
    open_logs: Callable[..., PostgresEventLog],
) -> None:
    """The cache still holds the run as running: the database, not the cache, decides."""
    writer, other = open_logs(), open_logs()
    await writer.open()
    await other.open()
    run_id = await running_run(writer)
    await writer.append(note(run_id, "cached"))
    assert await other.cancel_run(run_id, "stopped elsewhere")
    seen = writer_statements(writer)
    with pytest.raises(RunFinished):
        await writer.append(note(run_id, "too late"))
    assert short_way_outcomes(seen) == ["SLSTA"]  # tried from the cache, refused from the rows
    events = await writer.read_run(run_id)
    assert events[-1].type == EventType.RUN_CANCELLED
    assert (await writer.get_run(run_id)).status == RunStatus.CANCELLED


@dataclass
class Held:
    """An append sent the short way and held at the append lock by another connection."""

    run_id: str
    pid: int
    """The writer's backend, running the statement."""
    admin: asyncpg.Connection
    """Holds the append lock (session-level) until the block ends."""
    appending: asyncio.Task[Event]


@contextlib.asynccontextmanager
async def an_append_held_at_the_lock(log: PostgresEventLog, url: str) -> AsyncIterator[Held]:
    """Open `log`, make its cache serve a running run, then append "in doubt" to it while
    another connection holds the append lock: the writer's statement waits for the lock
    until the block ends."""
    await log.open()
    run_id = await running_run(log)
    await log.append(note(run_id, "warm"))  # the cache now serves this run
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(
            "SELECT pg_advisory_lock($1)", await admin.fetchval(QUERIES["append_lock_key"])
        )
        pid = log.writer_pid
        assert pid is not None
        appending = asyncio.create_task(log.append(note(run_id, "in doubt")))
        statement = await waiting_for_a_lock(url, log)
        assert "steplog_append_batch(" in statement  # the short way, not the long one
        yield Held(run_id, pid, admin, appending)
    finally:
        await admin.close()  # releases the lock


async def test_a_short_way_statement_killed_before_it_ran_is_written_once(
    open_logs: Callable[..., PostgresEventLog], pg_url: str
) -> None:
    """Its backend dies waiting for the lock: nothing committed, so the group is applied
    anew on a fresh connection, and the caller gets its event."""
    log = open_logs()
    async with an_append_held_at_the_lock(log, pg_url) as held:
        assert await held.admin.fetchval("SELECT pg_terminate_backend($1)", held.pid)
    event = await asyncio.wait_for(held.appending, 10)
    messages = [e.message for e in await log.read_run(held.run_id)]
    assert messages.count("in doubt") == 1
    assert (await log.read_all(event.pos - 1))[0] == event
    assert log.writer_pid not in (None, held.pid)


async def test_a_short_way_statement_that_outlived_its_connection_is_answered_once(
    open_logs: Callable[..., PostgresEventLog], pg_url: str
) -> None:
    """The client side of the connection is lost while the statement waits for the lock:
    the server still runs it once the lock is free. The writer, retrying, finds the group
    committed (or never run) under the lock, and never writes it twice. Either way the
    commit observers and listeners hear of it, as of any commit."""
    log = open_logs()
    observed: list[Event] = []
    told: list[int] = []
    log.add_commit_observer(lambda added, _waits: observed.extend(added))
    log.add_commit_listener(told.append)
    async with an_append_held_at_the_lock(log, pg_url) as held:
        conn = log._writer_conn
        assert conn is not None
        conn.terminate()  # the client's side only: the server's backend waits on
        await wait_for(
            lambda: log.writer_pid not in (None, held.pid),
            10,
            interval=0.01,
            what="a new connection",
        )
    event = await asyncio.wait_for(held.appending, 10)
    events = await log.read_run(held.run_id)
    assert [e.message for e in events].count("in doubt") == 1
    assert event in events
    assert event in observed
    await wait_for(lambda: told and told[-1] >= event.pos, 10, interval=0.01, what="the wake-up")
    report = await asyncio.to_thread(verify_log, pg_url)
    assert report.ok, report.problems


async def test_the_short_way_stores_exactly_what_it_hashed(
    open_logs: Callable[..., PostgresEventLog], pg_url: str
) -> None:
    """Rows travel as JSON text: every string and pct must read back as numbered, so
    the chain `audit verify` recomputes is the one the writer built."""
    log = open_logs()
    await log.open()
    run_id = await running_run(log)
    await log.append(note(run_id, "warm"))
    seen = writer_statements(log)
    awkward = ['"quoted" \\ back\\slash', "tab\tnew\nline", "é ß 漢字 🙂", "\u2028\u2029", "{}", ""]
    pcts = [None, 0.0, -0.0, 33.333, 1e-9, 99.995, 12345678.125, 1e300]
    appended = await asyncio.gather(
        *(
            log.append(
                NewEvent(
                    run_id,
                    EventType.STEP_PROGRESS,
                    1,
                    step=text,
                    message=text,
                    pct=pct,
                    data={"text": text, "n": [1, 2.5, None]},
                )
            )
            for text in awkward
            for pct in pcts
        )
    )
    stored = await log.read_run(run_id, appended[0].seq - 1)
    assert stored == sorted(appended)
    outcomes = short_way_outcomes(seen)  # every group went the short way, and committed
    assert outcomes and set(outcomes) == {"committed"}
    assert not [q for q in seen if q.query == QUERIES["write_batch"]]
    report = await asyncio.to_thread(verify_log, pg_url)
    assert report.ok, report.problems
