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
from dataclasses import astuple
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.archive import store
from storage.archive.chunk import Chunk
from storage.archive.records import ARCHIVE_FUNCTION, SegmentRecord
from storage.archive.segment import Manifest
from storage.runids import new_run_id
from storage.sqlfiles import SQLITE as Q
from storage.sqlite import archive_rows
from storage.sqlite.batch import Batch, Operation

if TYPE_CHECKING:
    from storage.sqlite.log import SQLiteEventLog


class SQLiteArchive(store.QueryStore):
    """`ArchiveStore` over an open `SQLiteEventLog`."""

    def __init__(self, log: SQLiteEventLog) -> None:
        self.log = log

    async def _query(self, name: str, *args: Any) -> list[Any]:
        return await self.log._read(Q[name], args)

    def _commit_op(self, manifest: Manifest, directory: str) -> ArchiveOp:
        return ArchiveOp(manifest, directory)

    async def check_allowed(self) -> None:
        """Whoever can write the SQLite file can archive it (the trigger still guards)."""

    async def chunk(self, first: int, last: int, prev_hash: str) -> Chunk:
        """The fast path (storage/sqlite/archive_rows.py), or the exact one when a row
        needs it: both give the same chunk, or the same `ArchiveError`."""
        try:
            rows: list[Any] | None = await self.log._read(Q["archive_fast_rows"], (first, last))
        except sqlite3.Error:
            rows = None  # a value SQLite cannot write as JSON: the exact path names it
        if rows is not None:
            built = await asyncio.to_thread(archive_rows.build, rows, first, last, prev_hash)
            if built is not None:
                [(first_at, last_at)] = await self.log._read(Q["archive_range_ends"], (first, last))
                built.first_at, built.last_at = str(first_at), str(last_at)
                return built
        return await super().chunk(first, last, prev_hash)


class ArchiveOp(store.CommitSegment, Operation[SegmentRecord]):
    def apply(self, batch: Batch) -> SegmentRecord:
        m, conn = self.manifest, batch.conn
        store.check_prefix(conn.execute(Q["archive_prefix"]).fetchone(), m)
        [(count, end_hash)] = batch.fetchall(
            Q["archive_range_check"], (m.last_pos, m.first_pos, m.last_pos)
        )
        store.check_range(count, end_hash, m)
        run_id = new_run_id(batch.now)
        conn.execute(
            Q["insert_archive_run"],
            (run_id, ARCHIVE_FUNCTION, batch.now_iso, batch.now_iso, batch.now_iso),
        )
        record = store.record_segment(batch, run_id, m, self.directory, m.digest())
        batch.flush()
        conn.execute(Q["insert_segment"], astuple(record))
        conn.executemany(Q["mark_archived"], [(m.segment, run) for run in m.runs])
        delete_rows(conn, m.first_pos, m.last_pos)
        return record


DELETE_CACHE_KIB = 65536
"""Page cache for the delete: with SQLite's default 2 MB, deleting 50,000 rows rereads
the pages of the `(run_id, seq)` index and takes about twice as long."""


def delete_rows(conn: sqlite3.Connection, first: int, last: int) -> None:
    """Delete the archived rows with a larger page cache, then give the memory back."""
    [(cache,)] = conn.execute("PRAGMA cache_size").fetchall()
    conn.execute(f"PRAGMA cache_size = -{DELETE_CACHE_KIB}")
    try:
        conn.execute(Q["delete_archived"], (first, last))
    finally:
        conn.execute(f"PRAGMA cache_size = {int(cache)}")


def vacuum(path: str) -> tuple[int, int]:
    """`VACUUM` the file at `path` (bytes before, after): gives back what archiving freed.

    Run on its own connection: it waits for the write lock (busy timeout) like any
    writer, and a running server's readers and writer carry on once it is done.
    """
    before = file_size(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute(Q["vacuum"])
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
