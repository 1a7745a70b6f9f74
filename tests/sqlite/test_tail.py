"""The tail hands this process's commits to subscribers without reading them back, and
reads the log for everything else (another process's commits, a gap, a backlog).

Real SQLite logs; "another process" is a second log instance on the same file, which
is exactly what another process is to SQLite. The reads the tail makes are counted on
the real log (its `read_all` wrapped, not replaced).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage import Event, EventLog, NewEvent, open_log
from storage.sqlite.log import SQLiteEventLog
from stream.sse import tail as tail_module
from stream.sse.frames import global_frame, run_frame
from stream.sse.hub import Subscriber, TailHub
from tests.support.clock import FakeClock
from tests.support.wait import wait_for

DEADLINE = 10.0


class CountedReads:
    """Counts `read_all` calls on a real log (the tail's only way to read events)."""

    def __init__(self, events: EventLog) -> None:
        self.calls = 0
        real = events.read_all

        async def read_all(after: int, limit: int) -> list[Event]:
            self.calls += 1
            return await real(after, limit)

        events.read_all = read_all  # type: ignore[method-assign]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[tuple[EventLog, EventLog]]:
    """Two logs on one SQLite file: this process's, and another process's."""
    ours, theirs = open_log(str(tmp_path / "tail.db")), open_log(str(tmp_path / "tail.db"))
    await ours.open()
    await theirs.open()
    yield ours, theirs
    await theirs.close()
    await ours.close()


async def running_run(events: EventLog) -> tuple[str, int]:
    run, _ = await events.create_run("ticker", {})
    claimed = await events.claim_run("w", 30, ["ticker"])
    assert claimed is not None
    return run.id, claimed.attempt


async def received(sub: Subscriber, into: list[tuple[int, bytes, bool]], count: int) -> None:
    """Drain `sub` into `into` until it holds `count` frames."""

    async def enough() -> bool:
        into.extend(sub.drain())
        return len(into) >= count

    await wait_for(enough, DEADLINE)


async def test_own_commits_are_fanned_out_without_a_read(
    db: tuple[EventLog, EventLog], clock: FakeClock
) -> None:
    ours, _ = db
    run_id, attempt = await running_run(ours)
    hub = TailHub(ours, poll_interval=60, buffer=1000, clock=clock)
    await hub.start()
    reads = CountedReads(ours)
    try:
        with hub.subscribe(None) as everyone, hub.subscribe(run_id) as one_run:
            tricky: list[Any] = ["Zoë \u2028 line\nbreak", {"b": 1, "a": [1.5, None]}, 10**20]
            await asyncio.gather(
                *(
                    ours.append(
                        NewEvent(run_id, "log", attempt, message=f"m{i}", pct=i / 3, data=value)
                    )
                    for i in range(60)
                    for value in [tricky[i % 3]]
                )
            )
            live: list[tuple[int, bytes, bool]] = []
            per_run: list[tuple[int, bytes, bool]] = []
            await received(everyone, live, 60)
            await received(one_run, per_run, 60)
        assert reads.calls == 0
        # Byte for byte what a read of the same rows gives.
        stored = (await ours.read_all(0, 1000))[-60:]
        assert [frame for _, frame, _ in live] == [global_frame(e) for e in stored]
        assert [frame for _, frame, _ in per_run] == [run_frame(e) for e in stored]
        assert [key for key, _, _ in live] == [e.pos for e in stored]
    finally:
        await hub.stop()


async def test_a_commit_from_another_process_in_between_is_read(
    db: tuple[EventLog, EventLog], clock: FakeClock
) -> None:
    """Ours, theirs, ours: the hand-over of the second of ours does not follow on from
    the cursor, so the tail reads the gap (and everything after it) from the log."""
    ours, theirs = db
    run_id, attempt = await running_run(ours)
    hub = TailHub(ours, poll_interval=60, buffer=1000, clock=clock)
    await hub.start()
    reads = CountedReads(ours)
    try:
        with hub.subscribe(None) as everyone:
            got: list[tuple[int, bytes, bool]] = []
            first = await ours.append(NewEvent(run_id, "log", attempt, message="ours 1"))
            await received(everyone, got, 1)
            await theirs.append(NewEvent(run_id, "log", attempt, message="theirs"))
            await ours.append(NewEvent(run_id, "log", attempt, message="ours 2"))
            await received(everyone, got, 3)
        assert [key for key, _, _ in got] == [first.pos, first.pos + 1, first.pos + 2]
        assert b"theirs" in got[1][1] and reads.calls >= 1
    finally:
        await hub.stop()


async def test_another_process_commits_arrive_at_the_poll(
    db: tuple[EventLog, EventLog], clock: FakeClock
) -> None:
    """A commit whose doorbell ring never came (a full queue, a process that does not
    ring) still arrives, at the poll."""
    ours, theirs = db
    assert isinstance(theirs, SQLiteEventLog)
    theirs.bell.close()  # theirs rings nobody from now on
    run_id, attempt = await running_run(theirs)
    hub = TailHub(ours, poll_interval=2, buffer=1000, clock=clock)
    await hub.start()
    try:
        with hub.subscribe(run_id) as one_run:
            event = await theirs.append(NewEvent(run_id, "log", attempt, message="elsewhere"))
            await clock.advance(1.9)
            assert not one_run.drain()  # nothing tells this process before its poll
            await clock.advance(0.1)
            got: list[tuple[int, bytes, bool]] = []
            await received(one_run, got, 1)
        assert got == [(event.seq, run_frame(event), False)]
    finally:
        await hub.stop()


async def test_a_backlog_beyond_the_hand_over_limit_is_read_back(
    db: tuple[EventLog, EventLog], clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tail_module, "MAX_HANDED", 5)
    ours, _ = db
    run_id, attempt = await running_run(ours)
    hub = TailHub(ours, poll_interval=60, buffer=1000, clock=clock)
    await hub.start()
    reads = CountedReads(ours)
    try:
        with hub.subscribe(None) as everyone:
            await asyncio.gather(
                *(ours.append(NewEvent(run_id, "log", attempt, message=str(i))) for i in range(40))
            )
            got: list[tuple[int, bytes, bool]] = []
            await received(everyone, got, 40)
        keys = [key for key, _, _ in got]
        assert keys == list(range(keys[0], keys[0] + 40))
    finally:
        await hub.stop()
    assert reads.calls >= 1  # the 40 queued together commit together: over the limit


async def test_nobody_watching_costs_no_reads(
    db: tuple[EventLog, EventLog], clock: FakeClock
) -> None:
    ours, _ = db
    run_id, attempt = await running_run(ours)
    hub = TailHub(ours, poll_interval=60, buffer=1000, clock=clock)
    await hub.start()
    reads = CountedReads(ours)
    try:
        last = None
        for i in range(5):
            last = await ours.append(NewEvent(run_id, "log", attempt, message=str(i)))
        assert last is not None

        async def caught_up() -> bool:
            return hub.tail.cursor == last.pos

        await wait_for(caught_up, DEADLINE)
        assert reads.calls == 0
    finally:
        await hub.stop()
