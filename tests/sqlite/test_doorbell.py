"""The doorbell: a commit through one log wakes the other logs on the same SQLite file.

Two logs on one file stand for two processes (each has its own writer, readers and
doorbell socket). Every poll here is set to a minute, so what arrives can only have
come through the doorbell (storage/doorbell.py).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from functions import registry
from functions.worker import WorkerPool
from storage import EventLog, NewEvent, open_log
from storage.doorbell import bell_directory
from storage.sqlite.log import SQLiteEventLog
from stream.sse.hub import TailHub
from tests.sqlite.conftest import finished
from tests.support.wait import wait_for

DEADLINE = 10.0
NEVER = 60.0
"""A poll interval no test waits out: a wake-up before it came from the doorbell."""


async def pair(path: Path) -> tuple[SQLiteEventLog, SQLiteEventLog]:
    ours, theirs = SQLiteEventLog(path), SQLiteEventLog(path)
    await ours.open()
    await theirs.open()
    return ours, theirs


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[tuple[SQLiteEventLog, SQLiteEventLog]]:
    """Two logs on one SQLite file: this process's, and another process's."""
    ours, theirs = await pair(tmp_path / "bell.db")
    yield ours, theirs
    await theirs.close()
    await ours.close()


async def test_a_commit_wakes_the_other_logs_listeners(
    db: tuple[SQLiteEventLog, SQLiteEventLog],
) -> None:
    ours, theirs = db
    heads: list[int] = []
    ours.add_commit_listener(heads.append)
    run, _ = await theirs.create_run("ticker", {})
    head = await theirs.head()
    await wait_for(lambda: head in heads, DEADLINE, what=f"head {head} rung to the other log")
    assert run.id


async def test_a_queued_run_wakes_work_listeners_and_a_heartbeat_rings_nobody(
    db: tuple[SQLiteEventLog, SQLiteEventLog],
) -> None:
    ours, theirs = db
    woken: list[str] = []
    ours.add_work_listener(lambda: woken.append("ours"))
    theirs.add_work_listener(lambda: woken.append("theirs"))
    await theirs.create_run("ticker", {})
    await wait_for(lambda: sorted(woken) == ["ours", "theirs"], DEADLINE, what="both woken")
    heads: list[int] = []
    ours.add_commit_listener(heads.append)
    claimed = await theirs.claim_run("w", 30, ["ticker"])
    assert claimed is not None
    await wait_for(lambda: heads, DEADLINE, what="the claim's run.started rung")
    before = len(heads)
    await theirs.heartbeat(claimed.id, claimed.attempt, "w", 30)  # writes no event
    await theirs.append(NewEvent(claimed.id, "log", claimed.attempt, message="after"))
    head = await theirs.head()
    await wait_for(lambda: head in heads, DEADLINE, what="the append rung")
    assert len(heads) == before + 1  # the heartbeat in between rang nobody
    assert sorted(woken) == ["ours", "theirs"]  # neither woke the workers again


async def test_the_tail_of_another_log_follows_without_polling(
    db: tuple[SQLiteEventLog, SQLiteEventLog],
) -> None:
    ours, theirs = db
    run, _ = await theirs.create_run("ticker", {})
    claimed = await theirs.claim_run("w", 30, ["ticker"])
    assert claimed is not None
    hub = TailHub(ours, poll_interval=NEVER, buffer=100)
    await hub.start()
    try:
        with hub.subscribe(run.id) as sub:
            for i in range(3):
                await theirs.append(NewEvent(run.id, "log", claimed.attempt, message=f"m{i}"))
            got: list[tuple[int, bytes, bool]] = []

            def three() -> bool:
                got.extend(sub.drain())
                return len(got) >= 3

            await wait_for(three, DEADLINE, what="three events from the other log")
        assert [seq for seq, _, _ in got] == [3, 4, 5]
    finally:
        await hub.stop()


async def test_a_worker_on_another_log_claims_at_once(
    db: tuple[SQLiteEventLog, SQLiteEventLog],
) -> None:
    registry.load(())
    ours, theirs = db
    pool = WorkerPool(ours, concurrency=2, poll_interval=NEVER)
    pool.start()
    try:
        # Let both slots look (and find nothing) before the run exists.
        await wait_for(lambda: pool.slots_running == 2, DEADLINE, what="the slots")
        run, _ = await theirs.create_run("ticker", {"count": 1, "interval_ms": 0})
        ended = await finished(theirs, run.id, DEADLINE)
        assert ended.status == "succeeded"
    finally:
        await pool.stop()


async def test_a_dead_processes_socket_is_removed_and_commits_go_on(tmp_path: Path) -> None:
    path = tmp_path / "bell.db"
    ours, theirs = await pair(path)
    try:
        # What a process killed with SIGKILL leaves: a socket file nobody is bound to.
        stale = bell_directory(path) / "4242-deadbeef.sock"
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        dead.bind(str(stale))
        dead.close()
        assert stale.exists()
        heads: list[int] = []
        ours.add_commit_listener(heads.append)
        await theirs.create_run("ticker", {})
        head = await theirs.head()
        await wait_for(lambda: head in heads, DEADLINE, what="the live log still rung")
        assert not stale.exists()
    finally:
        await theirs.close()
        await ours.close()
    assert list(bell_directory(path).iterdir()) == []  # each closed log removed its socket


async def test_a_path_too_long_for_a_socket_address_still_rings(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    ours, theirs = await pair(deep / "bell.db")
    try:
        assert len(str(bell_directory(deep / "bell.db"))) > 108
        heads: list[int] = []
        ours.add_commit_listener(heads.append)
        await theirs.create_run("ticker", {})
        head = await theirs.head()
        await wait_for(lambda: head in heads, DEADLINE, what="a ring through /proc/self/fd")
    finally:
        await theirs.close()
        await ours.close()


async def test_logs_that_cannot_ring_still_work(tmp_path: Path) -> None:
    """No doorbell directory can be made (a file is in the way): the log opens, commits,
    and other processes' commits arrive by the polls."""
    path = tmp_path / "bell.db"
    bell_directory(path).write_text("in the way")
    events: EventLog = open_log(str(path))
    await events.open()
    try:
        run, _ = await events.create_run("ticker", {})
        assert (await events.get_run(run.id)).status == "queued"
    finally:
        await events.close()
