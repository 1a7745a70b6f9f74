"""Why the PostgreSQL log's global stream cannot skip a late commit, shown on a real server.

The first test shows the hazard itself (ids from a sequence become visible out
of order); the rest show that steplog's append lock turns a late commit into a
wait for later appends instead of a hole, and that other processes are woken
by LISTEN/NOTIFY, also after their listening connection is killed. Several
`PostgresEventLog` instances on one schema stand in for several processes:
each has its own connections, exactly as separate processes would.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from storage import Event, EventType, InvalidEvent, LeaseLost, NewEvent, RunStatus, chain
from storage.postgres.errors import StorageUnavailable
from storage.postgres.log import PostgresEventLog
from storage.postgres.migrations import migrate_database
from tests.postgres.logs import running_run, waiting_for_a_lock
from tests.support.wait import wait_for


def canonical(e: Event) -> str:
    return chain.canonical_row(
        e.pos, e.run_id, e.seq, e.type, e.step, e.message, e.pct, e.data, e.attempt, e.at
    )


async def test_a_bare_sequence_skips_a_late_commit(pg_url: str) -> None:
    """The hazard the append lock exists for: a reader paging by id loses a late commit."""
    writer1, writer2, reader = [await asyncpg.connect(pg_url) for _ in range(3)]
    try:
        await writer1.execute("CREATE TABLE naive (id bigserial PRIMARY KEY)")
        late = writer1.transaction()
        await late.start()
        await writer1.execute("INSERT INTO naive DEFAULT VALUES")  # takes id 1, not committed
        await writer2.execute("INSERT INTO naive DEFAULT VALUES")  # takes id 2, commits
        seen = [r["id"] for r in await reader.fetch("SELECT id FROM naive WHERE id > 0")]
        cursor = max(seen)
        await late.commit()
        seen += [r["id"] for r in await reader.fetch("SELECT id FROM naive WHERE id > $1", cursor)]
        assert seen == [2], "id 1 committed after id 2 was read: a cursor reader never sees it"
    finally:
        for conn in (writer1, writer2, reader):
            await conn.close()


async def test_a_late_commit_holds_later_appends_back(
    open_logs: Callable[..., PostgresEventLog], pg_url: str
) -> None:
    gate, inside = asyncio.Event(), asyncio.Event()
    armed = False

    async def late_commit() -> None:
        if armed:
            inside.set()
            await gate.wait()

    slow, fast = open_logs(before_commit=late_commit), open_logs()
    await slow.open()
    await fast.open()
    run_id = await running_run(fast)
    start = await fast.head()

    armed = True
    first = asyncio.create_task(slow.append(NewEvent(run_id, EventType.LOG, 1, message="late")))
    await inside.wait()  # slow holds the append lock, its rows written but not committed
    second = asyncio.create_task(fast.append(NewEvent(run_id, EventType.LOG, 1, message="fast")))
    await waiting_for_a_lock(pg_url, fast)  # the server says so, not a pause
    assert not second.done(), "a later append must wait for the late commit, not overtake it"
    assert await fast.read_all(start) == [], "nothing is visible before the late commit"

    gate.set()
    late_event, fast_event = await first, await second
    assert (late_event.pos, fast_event.pos) == (start + 1, start + 2)
    assert (late_event.seq, fast_event.seq) == (3, 4)
    assert await fast.read_all(start) == [late_event, fast_event]
    assert fast_event.hash == chain.link(late_event.hash, canonical(fast_event))


async def test_a_frozen_writer_does_not_stall_the_others(
    open_logs: Callable[..., PostgresEventLog],
) -> None:
    """A process stuck inside its transaction (say, paused or partitioned) holds the
    append lock only until the server ends its idle session, not until it wakes."""
    frozen, thawed = asyncio.Event(), asyncio.Event()

    async def freeze_once() -> None:
        if not frozen.is_set():
            frozen.set()
            await thawed.wait()

    stuck, healthy = open_logs(before_commit=freeze_once, idle_limit=0.3), open_logs()
    await healthy.open()
    run_id = await running_run(healthy)
    await stuck.open()
    late = asyncio.create_task(stuck.append(NewEvent(run_id, EventType.LOG, 1, message="stuck")))
    await frozen.wait()
    on_time = await asyncio.wait_for(
        healthy.append(NewEvent(run_id, EventType.LOG, 1, message="healthy")), 10
    )
    thawed.set()
    with pytest.raises(StorageUnavailable):  # its session is gone: nothing of it committed
        await late
    assert [e.message for e in await healthy.read_run(run_id)][2:] == ["healthy"]
    assert on_time.seq == 3
    again = await stuck.append(NewEvent(run_id, EventType.LOG, 1, message="thawed"))
    assert (again.seq, again.pos) == (4, on_time.pos + 1)


async def test_a_nul_character_fails_only_its_own_append(
    open_logs: Callable[..., PostgresEventLog],
) -> None:
    """PostgreSQL text cannot hold NUL: refused up front, not by a failed group commit."""
    log = open_logs()
    await log.open()
    run_id = await running_run(log)
    bad, good = await asyncio.gather(
        log.append(NewEvent(run_id, EventType.LOG, 1, message="nul\x00byte")),
        log.append(NewEvent(run_id, EventType.LOG, 1, message="fine", data={"nul": "\x00"})),
        return_exceptions=True,
    )
    assert isinstance(bad, InvalidEvent) and isinstance(good, Event)
    assert json.loads(good.data) == {"nul": "\x00"}  # JSON escapes it: data is safe
    await log.retry_later(run_id, 1, 0, "boom\x00")
    assert (await log.get_run(run_id)).error == "boom\ufffd"


async def test_many_instances_share_one_gapless_chain(
    open_logs: Callable[..., PostgresEventLog],
) -> None:
    logs = [open_logs(readers=1) for _ in range(6)]
    for log in logs:
        await log.open()
    run_id = await running_run(logs[0])
    await asyncio.gather(
        *[
            log.append(NewEvent(run_id, EventType.LOG, 1, message=f"{n}-{i}"))
            for i in range(50)
            for n, log in enumerate(logs)
        ]
    )
    stored = await logs[0].read_all(0, 10_000)
    assert [e.pos for e in stored] == list(range(1, 303))
    assert [e.seq for e in stored] == list(range(1, 303))  # one run: seq follows pos
    prev = chain.GENESIS_HASH
    for e in stored:
        assert e.hash == chain.link(prev, canonical(e))
        prev = e.hash


async def test_other_processes_commits_wake_listeners(
    open_logs: Callable[..., PostgresEventLog],
) -> None:
    # A minute-long safety poll: only NOTIFY can explain a prompt wake-up.
    writer, watcher = open_logs(), open_logs(poll_interval=60)
    await writer.open()
    await watcher.open()
    run_id = await running_run(writer)
    told: list[int] = []
    watcher.add_commit_listener(told.append)
    assert watcher.watcher is not None
    await asyncio.wait_for(watcher.watcher.connected.wait(), 10)
    event = await writer.append(NewEvent(run_id, EventType.LOG, 1, message="hello"))
    await wait_for(lambda: told and told[-1] >= event.pos, 5, interval=0.01, what="the notice")


async def test_listener_reconnects_and_catches_up_after_its_connection_dies(
    open_logs: Callable[..., PostgresEventLog], pg_url: str
) -> None:
    writer, watcher = open_logs(), open_logs(poll_interval=60)
    await writer.open()
    await watcher.open()
    run_id = await running_run(writer)
    told: list[int] = []
    watcher.add_commit_listener(told.append)
    assert watcher.watcher is not None
    await asyncio.wait_for(watcher.watcher.connected.wait(), 10)
    first_pid = watcher.watcher.pid

    admin = await asyncpg.connect(pg_url)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", first_pid)
    finally:
        await admin.close()
    # Committed while nobody listens: the reconnect's head check must report it.
    missed = await writer.append(NewEvent(run_id, EventType.LOG, 1, message="while down"))
    await wait_for(lambda: told and told[-1] >= missed.pos, interval=0.01, what="the missed notice")
    await wait_for(
        lambda: watcher.watcher is not None and watcher.watcher.pid not in (None, first_pid),
        interval=0.01,
        what="the watcher to reconnect on a new connection",
    )
    later = await writer.append(NewEvent(run_id, EventType.LOG, 1, message="after"))
    await wait_for(
        lambda: told and told[-1] >= later.pos, 5, interval=0.01, what="the later notice"
    )


async def test_writer_reconnects_after_its_connection_dies(
    open_logs: Callable[..., PostgresEventLog], pg_url: str
) -> None:
    log = open_logs()
    await log.open()
    run_id = await running_run(log)
    admin = await asyncpg.connect(pg_url)
    try:
        killed = log.writer_pid
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", killed)
    finally:
        await admin.close()
    # Found dead before COMMIT, so nothing was committed: retried on a fresh connection.
    first = await log.append(NewEvent(run_id, EventType.LOG, 1, message="first"))
    second = await log.append(NewEvent(run_id, EventType.LOG, 1, message="second"))
    assert await log.read_all(first.pos - 1) == [first, second]
    assert log.writer_pid not in (None, killed)


async def test_instances_never_lease_one_run_twice(
    open_logs: Callable[..., PostgresEventLog],
) -> None:
    logs = [open_logs(readers=1) for _ in range(4)]
    for log in logs:
        await log.open()
    created = {(await logs[0].create_run("ticker", {"n": i}))[0].id for i in range(30)}

    async def claim_all(log: PostgresEventLog, worker: str) -> list[str]:
        taken = []
        while (run := await log.claim_run(worker, 60, ["ticker"])) is not None:
            assert run.lease_owner == worker and run.attempt == 1
            taken.append(run.id)
        return taken

    claimed = await asyncio.gather(*[claim_all(log, f"w{n}") for n, log in enumerate(logs)])
    every = [run_id for taken in claimed for run_id in taken]
    assert sorted(every) == sorted(created), "every run claimed exactly once"
    # Fencing holds across instances: the claimer's attempt is the only one accepted.
    with pytest.raises(LeaseLost):
        await logs[1].append(NewEvent(every[0], EventType.LOG, 2))


async def test_app_role_cannot_rewrite_history(pg_url: str) -> None:
    role = f"steplog_app_{int(time.time() * 1000) % 10**9}"
    admin = await asyncpg.connect(pg_url)
    await admin.execute(f"CREATE ROLE {role} LOGIN")
    try:
        await migrate_database(pg_url, app_role=role)
        parts = urlsplit(pg_url)
        as_app = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))
        log = PostgresEventLog(as_app, migrate=False)
        await log.open()
        try:
            run_id = await running_run(log)
            await log.append(NewEvent(run_id, EventType.RUN_SUCCEEDED, 1, data={"result": 1}))
            assert (await log.get_run(run_id)).status == RunStatus.SUCCEEDED
        finally:
            await log.close()
        app = await asyncpg.connect(as_app)
        try:
            for statement in ("UPDATE events SET message = 'forged'", "DELETE FROM events"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                    await app.execute(statement)
        finally:
            await app.close()
        # Even the owner (who has the grants) is stopped by the trigger.
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await admin.execute("TRUNCATE events")
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()
