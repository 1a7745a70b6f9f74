"""The SQLite archiver's fast rows (storage/sqlite/archive_rows.py) give exactly the
segment the exact path gives, for every kind of value steplog stores, and fall back
to the exact path (which names the problem) for a row they cannot vouch for."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from storage import NewEvent, open_log
from storage.archive import ArchiveError, archive, store_for
from storage.archive.chunk import chunk_from_rows
from storage.archive.segment import read_rows
from storage.sqlfiles import SQLITE
from storage.sqlite import archive_rows
from storage.sqlite.archive import SQLiteArchive

HOSTILE = [
    ("plain", 0.0, {"n": 1}),
    ("Zoë ✓ 日本 🎉", 12.5, {"text": "é\u2028\u2029"}),
    ('quote " backslash \\ slash /', 33.33, ["a", None, True, 1.5e300]),
    ("controls \x01\x1f\x7f\t\r\n", 99.99, {"k\x01": "v\x7f"}),
    ("nul \x00 inside", 100.0, None),
    ("huge pct", 1.2345678901234567e20, {"deep": [[[["x"]]]]}),
    ("negative", -5.25, "just a string"),
    ("no pct", None, {}),
]


async def fill(db: Path) -> list[tuple[object, ...]]:
    log = open_log(str(db))
    await log.open()
    try:
        for i, (message, pct, data) in enumerate(HOSTILE):
            run, _ = await log.create_run("f", {"i": i})
            claimed = await log.claim_run("w", 30, ["f"])
            assert claimed is not None
            await log.append(NewEvent(run.id, "log", claimed.attempt, "step ✓", message, pct, data))
            await log.append(NewEvent(run.id, "run.succeeded", claimed.attempt, data={"r": i}))
    finally:
        await log.close()
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT * FROM events ORDER BY pos").fetchall()


def columns(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        names = [row[1] for row in conn.execute("PRAGMA table_info(events)")]
    return ", ".join(names)


async def test_fast_lines_are_the_exact_lines_for_hostile_values(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    await fill(db)
    with sqlite3.connect(db) as conn:
        last = conn.execute("SELECT max(pos) FROM events").fetchone()[0]
        fast = conn.execute(SQLITE["archive_fast_rows"], (1, last)).fetchall()
        full = conn.execute(
            "SELECT pos, run_id, seq, type, step, message, pct, data, attempt, at, hash"
            " FROM events ORDER BY pos"
        ).fetchall()
    built = archive_rows.build(fast, 1, last, "0" * 64)
    assert built is not None  # every value steplog stores takes the fast path
    exact = chunk_from_rows(full, 1, last, "0" * 64)
    assert built.lines == exact.lines
    assert (built.runs, built.last_hash) == (exact.runs, exact.last_hash)


async def test_archived_segment_reads_back_to_the_stored_rows(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    await fill(db)
    with sqlite3.connect(db) as conn:
        stored = conn.execute(
            "SELECT pos, run_id, seq, type, step, message, pct, data, attempt, at, hash"
            " FROM events ORDER BY pos"
        ).fetchall()
    log = open_log(str(db))
    await log.open()
    try:
        result = await archive(store_for(log), tmp_path / "archive", time.time() + 60)
    finally:
        await log.close()
    assert result.events == len(stored) and len(result.segments) == 1
    rows = list(read_rows(tmp_path / "archive" / result.segments[0].segment))
    assert [list(row) for row in rows] == [list(row) for row in stored]
    # A pct that needs 17 digits survives exactly (SQLite's JSON would write 15).
    pcts = [row[6] for row in rows if row[3] == "log"]
    assert pcts[5] == 1.2345678901234567e20


async def test_a_tampered_row_is_named_not_archived(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    await fill(db)
    with sqlite3.connect(db) as conn:  # forge a message behind the triggers' back
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("UPDATE events SET message = 'forged' WHERE pos = 3")
    log = open_log(str(db))
    await log.open()
    try:
        store = store_for(log)
        assert isinstance(store, SQLiteArchive)
        with pytest.raises(ArchiveError, match="pos 3"):
            await archive(store, tmp_path / "archive", time.time() + 60)
        assert await log.head() == len(HOSTILE) * 4
    finally:
        await log.close()
