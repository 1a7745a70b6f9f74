"""The audit of an archived log, on SQLite and PostgreSQL: the archive's checks run as hooks
of the one audit (storage/archive/audit_hook.py), so both backends give the same verdicts.

Each test archives real runs, then tampers through the database as someone with
its keys would (triggers off, then back on) and checks what an auditor is told:
a forged segment record, a row slipped back into the archived range, a live
run's record that disagrees, a run cut in two at the start of a bounded scan,
and `steplog runs show` of an archived run.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from storage import EventLog, NewEvent, chain
from storage.archive import archive, store_for
from storage.archive.segment import read_rows
from storage.audit import Report, open_source, verify, verify_log
from storage.audit.model import ANCHOR, INSERTED, RECORDS, SEQ
from storage.audit.postgres import dollar_params

FUTURE = time.time() + 3600
Statement = str | tuple[str, tuple[Any, ...]]


async def finished_runs(log: EventLog, count: int, events: int = 3) -> list[str]:
    ids = []
    for i in range(count):
        run, _ = await log.create_run("f", {"i": i})
        claimed = await log.claim_run("w", 30, ["f"])
        assert claimed is not None and claimed.id == run.id
        for n in range(events):
            await log.append(NewEvent(run.id, "log", claimed.attempt, message=f"{i}.{n}"))
        await log.append(NewEvent(run.id, "run.succeeded", claimed.attempt, data={"result": i}))
        ids.append(run.id)
    return ids


async def audit(url: str) -> Report:
    """The audit's verdict (in a thread: the PostgreSQL source runs its own event loop)."""
    return await asyncio.to_thread(verify_log, url)


async def tamper(url: str, *statements: Statement) -> None:
    """Run statements with every append-only trigger off, then put the triggers back."""
    if url.startswith("postgresql"):
        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                for table in ("events", "archive_segments"):
                    await conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
                for statement in statements:
                    sql, args = statement if isinstance(statement, tuple) else (statement, ())
                    await conn.execute(dollar_params(sql), *args)
                for table in ("events", "archive_segments"):
                    await conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
        finally:
            await conn.close()
        return
    conn = sqlite3.connect(url, isolation_level=None)
    try:
        triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
        saved = triggers.fetchall()
        for name, _sql in saved:
            conn.execute(f"DROP TRIGGER {name}")
        for statement in statements:
            sql, args = statement if isinstance(statement, tuple) else (statement, ())
            conn.execute(sql, args)
        for _name, sql in saved:
            conn.execute(sql)
    finally:
        conn.close()


async def test_a_forged_segment_record_is_named(
    log: EventLog, log_url: str, tmp_path: Path
) -> None:
    await finished_runs(log, 6)
    result = await archive(store_for(log), tmp_path / "archive", FUTURE, max_events=10)
    first = result.segments[0]
    assert (await audit(log_url)).ok
    forge = "UPDATE archive_segments SET manifest_sha256 = ? WHERE segment = ?"
    await tamper(log_url, (forge, ("0" * 64, first.segment)))
    report = await audit(log_url)
    assert not report.ok
    problem = report.problems[0]
    assert (problem.kind, problem.pos) == (ANCHOR, first.first_pos)
    assert first.segment in problem.detail and "archive records were altered" in problem.detail
    assert report.note is not None and "are archived in" in report.note


async def test_a_row_slipped_back_into_the_archived_range_is_named(
    log: EventLog, log_url: str, tmp_path: Path
) -> None:
    await finished_runs(log, 3)
    result = await archive(store_for(log), tmp_path / "archive", FUTURE)
    rows = list(read_rows(tmp_path / "archive" / result.segments[0].segment))
    again = rows[1]  # the archived row at pos 2, exactly as it was
    columns = "pos, run_id, seq, type, step, message, pct, data, attempt, at, hash"
    await tamper(log_url, (f"INSERT INTO events ({columns}) VALUES ({', '.join('?' * 11)})", again))
    report = await audit(log_url)
    assert not report.ok
    assert (report.problems[0].kind, report.problems[0].pos) == (INSERTED, 2)
    assert "inserted after archiving" in report.problems[0].detail


async def test_live_run_records_are_still_compared_after_archiving(
    log: EventLog, log_url: str, tmp_path: Path
) -> None:
    await finished_runs(log, 2)
    await archive(store_for(log), tmp_path / "archive", FUTURE)
    live = await finished_runs(log, 1)
    report = await audit(log_url)
    assert report.ok, report.lines()  # the archived runs' records are not compared
    await tamper(log_url, ("UPDATE runs SET last_seq = 99 WHERE id = ?", (live[0],)))
    report = await audit(log_url)
    assert [(p.kind, p.pos) for p in report.problems] == [(RECORDS, None)]
    assert live[0] in report.problems[0].detail


async def test_a_bounded_scan_names_a_run_whose_first_events_are_gone(
    log: EventLog, log_url: str
) -> None:
    """Rows only ever leave with their whole run: a scan from a later start that begins in
    the middle of a run whose first events are nowhere reports them missing."""
    ids = await finished_runs(log, 3)
    events = await log.read_run(ids[1])  # pos k..k+4
    cut = events[2].pos  # the scan starts at the run's third event
    before = (await log.read_all(cut - 2, 1))[0].hash
    await tamper(log_url, ("DELETE FROM events WHERE pos < ?", (cut,)))

    def scan() -> Report:
        source = open_source(log_url)
        try:
            return verify(source, start_pos=cut, prev_hash=before)
        finally:
            source.close()

    report = await asyncio.to_thread(scan)
    assert not report.ok
    problem = report.problems[0]
    assert (problem.kind, problem.pos) == (SEQ, cut)
    assert f"run {ids[1]} starts at seq 3" in problem.detail
    assert report.head_pos == await log.head()
    assert before != chain.GENESIS_HASH


async def test_runs_show_names_the_segment_of_an_archived_run(
    log: EventLog, log_url: str, tmp_path: Path
) -> None:
    ids = await finished_runs(log, 2)
    result = await archive(store_for(log), tmp_path / "archive", FUTURE)
    shown = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "stream", "runs", "show", ids[0], "--db", log_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"archived: its events are in {result.segments[0].segment}" in shown.stdout
    assert "Traceback" not in shown.stderr
