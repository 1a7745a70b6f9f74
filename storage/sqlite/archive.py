"""The SQLite side of archiving (storage/archive/): reads over the log's readers, and the
commit as one operation of the log's writer.

The commit goes through the writer like every other write, so it is one
`BEGIN IMMEDIATE` transaction serialised with the appends (a few tens of
milliseconds for a 50,000-row segment): the segment record, the chained
`archive.segment` event, the runs marked archived and the rows deleted commit
together or not at all. The `events_no_delete` trigger (004_archive.sql) only
lets a row go once a segment recorded in `archive_segments` covers it, so no
other code path can delete a live row.

Space: SQLite reuses the freed pages for new rows but does not shrink the file.
`vacuum` (what `steplog log archive --vacuum` runs) rewrites the file at its
new size; it takes the write lock for as long as copying the live log takes, so
it is an operator's choice, never automatic (see the README, Operations).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage import chain
from storage.archive.chunk import Chunk, chunk_from_rows
from storage.archive.plan import RunSpan
from storage.archive.records import (
    ARCHIVE_FUNCTION,
    COLUMNS,
    SEGMENT_EVENT,
    Prefix,
    SegmentRecord,
    segment_event_data,
)
from storage.archive.segment import ArchiveError, Manifest, Row
from storage.model import EventType, NewEvent, RunStatus
from storage.numbering import RunState
from storage.runids import new_run_id
from storage.sqlite import archive_rows
from storage.sqlite.batch import Batch, Operation
from storage.sqlite.rows import EVENT_COLUMNS

if TYPE_CHECKING:
    from storage.sqlite.log import SQLiteEventLog

FINISHED = ("succeeded", "failed", "cancelled")

SPANS = (
    "SELECT f.run_id, f.first,"
    " (SELECT e.pos FROM events e WHERE e.run_id = f.run_id AND e.seq = r.last_seq),"
    " (SELECT e.pos FROM events e WHERE e.run_id = f.run_id AND e.seq = 1),"
    " r.status, r.finished_at"
    " FROM (SELECT run_id, min(pos) AS first FROM events WHERE pos > ? AND pos <= ?"
    "       GROUP BY run_id) f"
    " LEFT JOIN runs r ON r.id = f.run_id ORDER BY f.first"
)
PREFIX = (
    "SELECT last_pos, last_hash, (SELECT count(*) FROM archive_segments) FROM archive_segments"
    " ORDER BY last_pos DESC LIMIT 1"
)


def span_of(row: Any, cutoff_iso: str) -> RunSpan:
    """A run's span from `SPANS`, and whether it may be archived (shared with PostgreSQL)."""
    run_id, first, last, seq_one, status, finished_at = row
    why = ""
    if status is None:
        why = "has events but no record"
    elif status not in FINISHED:
        why = f"is {status}"
    elif finished_at is None or str(finished_at) >= cutoff_iso:
        why = f"ended at {finished_at}, after the cutoff"
    elif last is None or seq_one != first:
        why = "is not whole in the live log"
    return RunSpan(str(run_id), int(first), int(last or first), not why, why)


class SQLiteArchive:
    """`ArchiveStore` over an open `SQLiteEventLog`."""

    def __init__(self, log: SQLiteEventLog) -> None:
        self.log = log

    async def check_allowed(self) -> None:
        """Whoever can write the SQLite file can archive it (the trigger still guards)."""

    async def prefix(self) -> Prefix:
        rows = await self.log._read(PREFIX, ())
        return Prefix(*rows[0]) if rows else Prefix()

    async def head(self) -> int:
        return await self.log.head()

    async def spans(self, start: int, window_end: int, cutoff_iso: str) -> list[RunSpan]:
        rows = await self.log._read(SPANS, (start, window_end))
        return [span_of(row, cutoff_iso) for row in rows]

    async def rows(self, first: int, last: int) -> list[Row]:
        rows = await self.log._read(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE pos BETWEEN ? AND ? ORDER BY pos",
            (first, last),
        )
        return [tuple(row) for row in rows]

    async def chunk(self, first: int, last: int, prev_hash: str) -> Chunk:
        """The fast path (storage/sqlite/archive_rows.py), or the exact one when a row
        needs it: both give the same chunk, or the same `ArchiveError`."""
        try:
            rows: list[Any] | None = await self.log._read(archive_rows.FAST, (first, last))
        except sqlite3.Error:
            rows = None  # a value SQLite cannot write as JSON: the exact path names it
        if rows is not None:
            built = await asyncio.to_thread(archive_rows.build, rows, first, last, prev_hash)
            if built is not None:
                [(first_at, last_at)] = await self.log._read(archive_rows.ENDS, (first, last))
                built.first_at, built.last_at = str(first_at), str(last_at)
                return built
        full = await self.rows(first, last)
        return await asyncio.to_thread(chunk_from_rows, full, first, last, prev_hash)

    async def commit(self, manifest: Manifest, directory: str) -> SegmentRecord:
        record: SegmentRecord = await self.log._submit(ArchiveOp(manifest, directory))
        return record

    async def records(self) -> list[SegmentRecord]:
        rows = await self.log._read(f"SELECT {COLUMNS} FROM archive_segments ORDER BY last_pos", ())
        return [SegmentRecord(*row) for row in rows]

    async def run_segment(self, run_id: str) -> SegmentRecord | None:
        rows = await self.log._read(
            f"SELECT {COLUMNS} FROM archive_segments WHERE segment ="
            " (SELECT archived_segment FROM runs WHERE id = ?)",
            (run_id,),
        )
        return SegmentRecord(*rows[0]) if rows else None


class ArchiveOp(Operation[SegmentRecord]):
    """Record a written segment and remove its rows, in the writer's transaction."""

    def __init__(self, manifest: Manifest, directory: str) -> None:
        super().__init__()
        self.manifest = manifest
        self.directory = directory

    def apply(self, batch: Batch) -> SegmentRecord:
        m = self.manifest
        found = batch.fetchall(PREFIX)
        last_pos, last_hash = (found[0][0], found[0][1]) if found else (0, chain.GENESIS_HASH)
        if (last_pos, last_hash) != (m.first_pos - 1, m.prev_hash):
            raise ArchiveError(
                f"the archived prefix moved to pos {last_pos} while {m.segment} was written"
                " (another archiver?); nothing was removed"
            )
        [(count, end_hash)] = batch.fetchall(
            "SELECT count(*), (SELECT hash FROM events WHERE pos = ?) FROM events"
            " WHERE pos BETWEEN ? AND ?",
            (m.last_pos, m.first_pos, m.last_pos),
        )
        if count != m.rows or end_hash != m.last_hash:
            raise ArchiveError(
                f"the live rows at pos {m.first_pos} to {m.last_pos} differ from {m.segment};"
                " nothing was removed"
            )
        digest = m.digest()
        data = segment_event_data(m, self.directory, digest)
        run_id = new_run_id(batch.now)
        batch.conn.execute(
            "INSERT INTO runs (id, function, params, status, attempt, max_attempts, last_seq,"
            " created_at, updated_at, started_at) VALUES (?, ?, '{}', 'running', 0, 1, 0, ?, ?, ?)",
            (run_id, ARCHIVE_FUNCTION, batch.now_iso, batch.now_iso, batch.now_iso),
        )
        batch.runs[run_id] = RunState(attempt=0, status=RunStatus.RUNNING, last_seq=0)
        event = batch.add_event(segment_event(run_id, m, data))
        batch.add_event(archived_event(run_id, m, data))
        batch.flush()
        record = SegmentRecord(
            m.segment, self.directory, m.first_pos, m.last_pos, m.prev_hash, m.last_hash,
            digest, m.rows, len(m.runs), event.pos, batch.now_iso,
        )  # fmt: skip
        batch.conn.execute(
            f"INSERT INTO archive_segments ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.segment, record.directory, record.first_pos, record.last_pos,
                record.prev_hash, record.last_hash, record.manifest_sha256, record.rows,
                record.runs, record.event_pos, record.created_at,
            ),
        )  # fmt: skip
        batch.conn.executemany(
            "UPDATE runs SET archived_segment = ? WHERE id = ?",
            [(m.segment, run) for run in m.runs],
        )
        delete_rows(batch.conn, m.first_pos, m.last_pos)
        return record


DELETE_CACHE_KIB = 65536
"""Page cache for the delete: with SQLite's default 2 MB, deleting 50,000 rows rereads
the pages of the `(run_id, seq)` index and takes about twice as long."""


def delete_rows(conn: sqlite3.Connection, first: int, last: int) -> None:
    """Delete the archived rows with a larger page cache, then give the memory back."""
    [(cache,)] = conn.execute("PRAGMA cache_size").fetchall()
    conn.execute(f"PRAGMA cache_size = -{DELETE_CACHE_KIB}")
    try:
        conn.execute("DELETE FROM events WHERE pos BETWEEN ? AND ?", (first, last))
    finally:
        conn.execute(f"PRAGMA cache_size = {int(cache)}")


def segment_event(run_id: str, m: Manifest, data: dict[str, object]) -> NewEvent:
    return NewEvent(
        run_id, SEGMENT_EVENT, attempt=0,
        message=f"pos {m.first_pos} to {m.last_pos} ({m.rows} events of {len(m.runs)} runs)"
        f" moved to {m.segment}",
        data=data,
    )  # fmt: skip


def archived_event(run_id: str, m: Manifest, data: dict[str, object]) -> NewEvent:
    return NewEvent(
        run_id, EventType.RUN_SUCCEEDED, attempt=0, message=f"archived {m.segment}",
        data={"result": data},
    )  # fmt: skip


def vacuum(path: str) -> tuple[int, int]:
    """`VACUUM` the file at `path` (bytes before, after): gives back what archiving freed.

    Run on its own connection: it waits for the write lock (busy timeout) like any
    writer, and a running server's readers and writer carry on once it is done.
    """
    before = file_size(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return before, file_size(path)


def file_size(path: str) -> int:
    """Bytes of the database file plus its WAL."""
    return sum(
        Path(path + suffix).stat().st_size
        for suffix in ("", "-wal")
        if Path(path + suffix).exists()
    )
