"""Archiving (storage/archive/) on both backends, against real databases and real files.

Each test fills a log with finished runs (plus, where it matters, one that is not),
archives, and checks what a user relies on: nothing lost (every archived event is in
a verified segment), the live log still verifies, a run still going is never
archived, the delete guard refuses every other DELETE, a damaged archive is named.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import sqlite3
import time
from pathlib import Path

import asyncpg
import pytest

from storage import EventLog, NewEvent
from storage.archive import ArchiveError, archive, store_for
from storage.archive.audit import verify_with_archive
from storage.archive.replay import SegmentRun
from storage.archive.segment import read_rows
from storage.audit import Report, verify_log

FUTURE = time.time() + 3600


async def finished_runs(log: EventLog, count: int, events: int = 3) -> list[str]:
    ids = []
    for i in range(count):
        run, _ = await log.create_run("f", {"i": i})
        claimed = await log.claim_run("w", 30, ["f"])
        assert claimed is not None and claimed.id == run.id
        for n in range(events):
            await log.append(NewEvent(run.id, "log", claimed.attempt, message=f"{i}.{n}", pct=12.5))
        await log.append(NewEvent(run.id, "run.succeeded", claimed.attempt, data={"result": i}))
        ids.append(run.id)
    return ids


async def verify(url: str, directory: Path | None = None) -> Report:
    """The audit's verdict (in a thread: the PostgreSQL audit runs its own event loop)."""
    return await asyncio.to_thread(_verify, url, directory)


def _verify(url: str, directory: Path | None) -> Report:
    if directory is not None:
        return verify_with_archive(url, directory, None)
    return verify_log(url)


async def test_archives_whole_finished_runs_and_everything_still_verifies(
    log: EventLog, log_url: str, tmp_path: Path
) -> None:
    ids = await finished_runs(log, 20)
    head_before = await log.head()
    result = await archive(store_for(log), tmp_path / "archive", FUTURE, max_events=30)
    assert result.events == head_before  # 20 runs x 6 events, all of them
    assert len(result.segments) == 4  # 30-event chunks hold 5 whole runs each
    assert await log.read_run(ids[0]) == []
    run = await log.get_run(ids[0])
    assert run.status.value == "succeeded" and run.result == 0

    live = await verify(log_url)
    assert live.ok, live.lines()
    assert live.note is not None and f"1..{head_before} are archived in 4" in live.note
    both = await verify(log_url, tmp_path / "archive")
    assert both.ok, both.lines()
    assert both.events == await log.head()
    assert both.head_pos == await log.head()

    # Archiving is itself in the chained log: an archive.segment event per segment.
    recorded = await store_for(log).records()
    segment_events = [e for e in await log.read_all(head_before) if e.type == "archive.segment"]
    assert [json.loads(e.data)["manifest_sha256"] for e in segment_events] == [
        r.manifest_sha256 for r in recorded
    ]
    # Every archived row is in a segment, exactly once, in order.
    rows = [row for r in recorded for row in read_rows(tmp_path / "archive" / r.segment)]
    assert [row[0] for row in rows] == list(range(1, head_before + 1))


async def test_a_run_still_going_stops_the_prefix(log: EventLog, tmp_path: Path) -> None:
    done = await finished_runs(log, 3)
    waiting, _ = await log.create_run("g", {"waiting": True})  # no worker claims "g"
    later = await finished_runs(log, 3)
    result = await archive(store_for(log), tmp_path / "archive", FUTURE)
    assert result.blocked_by is not None and result.blocked_by.run_id == waiting.id
    assert await log.read_run(done[-1]) == []
    assert len(await log.read_run(waiting.id)) == 1
    assert len(await log.read_run(later[0])) == 6  # after the open run: kept live


async def test_runs_ended_after_the_cutoff_stay_live(log: EventLog, tmp_path: Path) -> None:
    ids = await finished_runs(log, 3)
    result = await archive(store_for(log), tmp_path / "archive", time.time() - 3600)
    assert result.segments == []
    assert len(await log.read_run(ids[0])) == 6


async def test_archived_runs_replay_from_their_segment(log: EventLog, tmp_path: Path) -> None:
    ids = await finished_runs(log, 4)
    expected = await log.read_run_envelopes(ids[2])
    await archive(store_for(log), tmp_path / "archive", FUTURE)
    record = await store_for(log).run_segment(ids[2])
    assert record is not None
    replay = SegmentRun(record, Path(record.directory), ids[2])
    assert await replay.read_run_envelopes(ids[2]) == expected


async def test_no_other_code_path_can_delete_a_live_row(
    log: EventLog, log_url: str, tmp_path: Path
) -> None:
    await finished_runs(log, 2)
    await archive(store_for(log), tmp_path / "archive", FUTURE)
    head = await log.head()
    if log_url.startswith("postgresql"):
        conn = await asyncpg.connect(log_url)
        try:
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute("DELETE FROM events WHERE pos = $1", head)
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute("DELETE FROM archive_segments")
        finally:
            await conn.close()
    else:
        conn = sqlite3.connect(log_url)
        try:
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute("DELETE FROM events WHERE pos = ?", (head,))
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute("DELETE FROM archive_segments")
        finally:
            conn.close()
    assert await log.head() == head


async def test_a_missing_altered_or_reordered_segment_is_named(
    log: EventLog, log_url: str, tmp_path: Path
) -> None:
    await finished_runs(log, 9)
    folder = tmp_path / "archive"
    result = await archive(store_for(log), folder, FUTURE, max_events=20)
    first, second = result.segments[0], result.segments[1]

    # altered: one event rewritten inside a segment (a valid gzip, another sha256)
    path = folder / second.segment
    original = path.read_bytes()
    lines = gzip.decompress(original).decode().splitlines()
    row = json.loads(lines[1])
    row[5] = "rewritten"
    lines[1] = json.dumps(row, ensure_ascii=False, separators=(",", ":"))
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
    report = await verify(log_url, folder)
    assert not report.ok and report.first is not None
    assert report.first.kind == "changed" and second.segment in report.first.detail
    path.write_bytes(original)
    assert (await verify(log_url, folder)).ok

    # out of order: two segments' files exchanged
    a, b = folder / first.segment, folder / second.segment
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)
    report = await verify(log_url, folder)
    assert not report.ok and report.first is not None and report.first.pos == 1
    a.write_bytes(a_bytes)
    b.write_bytes(b_bytes)

    # missing: a segment file gone, then the whole directory
    b.rename(tmp_path / "elsewhere")
    report = await verify(log_url, folder)
    assert report.first is not None and report.first.kind == "missing"
    assert second.segment in report.first.detail
    report = await verify(log_url, tmp_path / "no-such-dir")
    assert report.first is not None and report.first.kind == "missing"
    assert "does not exist" in report.first.detail


async def test_archiving_twice_continues_the_chain(
    log: EventLog, log_url: str, tmp_path: Path
) -> None:
    await finished_runs(log, 3)
    await archive(store_for(log), tmp_path / "archive", FUTURE)
    await finished_runs(log, 3)
    second = await archive(store_for(log), tmp_path / "archive", FUTURE)
    assert second.segments  # the first archive's own run went too
    report = await verify(log_url, tmp_path / "archive")
    assert report.ok, report.lines()
    # appends after archiving still chain from the head
    await finished_runs(log, 1)
    assert (await verify(log_url)).ok


async def test_a_hostile_archive_path_is_refused_and_nothing_is_removed(
    log: EventLog, tmp_path: Path
) -> None:
    await finished_runs(log, 2)
    head = await log.head()
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    with pytest.raises(ArchiveError, match="not a directory"):
        await archive(store_for(log), a_file, FUTURE)
    with pytest.raises(ArchiveError):
        await archive(store_for(log), a_file / "below", FUTURE)
    assert len(await log.read_all(0, 100)) == head
