"""The PostgreSQL side of archiving (storage/archive/): the same records and rules as
SQLite (storage/sqlite/archive.py), the commit as one operation of the log's writer.

The commit runs under the append lock like every write, so the `archive.segment`
event is chained in commit order and no append can interleave with the delete.
Only a role with DELETE on `events` can archive (`steplog migrate
--archiver-role ROLE`; the app role of `--app-role` has none), and the trigger
(003_archive.sql) lets it delete only positions a recorded segment covers.

Space: deleted rows are dead tuples that autovacuum reclaims for reuse (the
table file does not shrink unless `VACUUM FULL` is run, which locks the table);
a steady retention keeps the table at a steady size, which is the point.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import asyncpg

from storage import chain
from storage.archive.chunk import Chunk, chunk_from_rows
from storage.archive.plan import RunSpan
from storage.archive.records import (
    ARCHIVE_FUNCTION,
    COLUMNS,
    Prefix,
    SegmentRecord,
    segment_event_data,
)
from storage.archive.segment import ArchiveError, ArchiveNotAllowed, Manifest, Row
from storage.model import RunStatus
from storage.numbering import RunState
from storage.postgres.batch import Batch, Operation
from storage.runids import new_run_id
from storage.sqlite.archive import archived_event, segment_event, span_of

if TYPE_CHECKING:
    from storage.postgres.log import PostgresEventLog

SPANS = (
    "SELECT f.run_id, f.first,"
    " (SELECT e.pos FROM events e WHERE e.run_id = f.run_id AND e.seq = r.last_seq),"
    " (SELECT e.pos FROM events e WHERE e.run_id = f.run_id AND e.seq = 1),"
    " r.status, r.finished_at"
    " FROM (SELECT run_id, min(pos) AS first FROM events WHERE pos > $1 AND pos <= $2"
    "       GROUP BY run_id) f"
    " LEFT JOIN runs r ON r.id = f.run_id ORDER BY f.first"
)
PREFIX = (
    "SELECT last_pos, last_hash, (SELECT count(*) FROM archive_segments) FROM archive_segments"
    " ORDER BY last_pos DESC LIMIT 1"
)
ALLOWED = (
    "SELECT current_user, has_table_privilege('events', 'DELETE'),"
    " has_table_privilege('archive_segments', 'INSERT')"
)
ROWS = (
    "SELECT pos, run_id, seq, type, step, message, pct, data, attempt, at, hash FROM events"
    " WHERE pos BETWEEN $1 AND $2 ORDER BY pos"
)


class PostgresArchive:
    """`ArchiveStore` over an open `PostgresEventLog`."""

    def __init__(self, log: PostgresEventLog) -> None:
        self.log = log

    async def _rows(self, sql: str, *args: Any) -> list[Any]:
        pool = self.log._pool
        if pool is None:
            raise ArchiveError("the log is closed")
        try:
            return list(await pool.fetch(sql, *args))
        except asyncpg.PostgresError as exc:
            raise ArchiveError(f"PostgreSQL refused: {exc}") from None

    async def check_allowed(self) -> None:
        """The role must hold what `steplog migrate --archiver-role` grants; the app role
        of `--app-role` does not, on purpose."""
        [row] = await self._rows(ALLOWED)
        if not (row[1] and row[2]):
            raise ArchiveNotAllowed(
                f"the PostgreSQL role {row[0]} may not archive (it has no DELETE on events):"
                f" grant it with `steplog migrate --archiver-role {row[0]}` run by the schema's"
                " owner, or archive through a role that has it (`steplog log archive --db"
                " URL`; for retention in `steplog serve`, set STEPLOG_ARCHIVE_DB to that"
                " role's URL); nothing was removed"
            )

    async def prefix(self) -> Prefix:
        rows = await self._rows(PREFIX)
        return Prefix(int(rows[0][0]), str(rows[0][1]), int(rows[0][2])) if rows else Prefix()

    async def head(self) -> int:
        return await self.log.head()

    async def spans(self, start: int, window_end: int, cutoff_iso: str) -> list[RunSpan]:
        return [span_of(tuple(r), cutoff_iso) for r in await self._rows(SPANS, start, window_end)]

    async def rows(self, first: int, last: int) -> list[Row]:
        return [tuple(r) for r in await self._rows(ROWS, first, last)]

    async def chunk(self, first: int, last: int, prev_hash: str) -> Chunk:
        rows = await self.rows(first, last)
        return await asyncio.to_thread(chunk_from_rows, rows, first, last, prev_hash)

    async def commit(self, manifest: Manifest, directory: str) -> SegmentRecord:
        record: SegmentRecord = await self.log._submit(ArchiveOp(manifest, directory))
        return record

    async def records(self) -> list[SegmentRecord]:
        rows = await self._rows(f"SELECT {COLUMNS} FROM archive_segments ORDER BY last_pos")
        return [SegmentRecord(*r) for r in rows]

    async def run_segment(self, run_id: str) -> SegmentRecord | None:
        rows = await self._rows(
            f"SELECT {COLUMNS} FROM archive_segments WHERE segment ="
            " (SELECT archived_segment FROM runs WHERE id = $1)",
            run_id,
        )
        return SegmentRecord(*rows[0]) if rows else None


class ArchiveOp(Operation[SegmentRecord]):
    """Record a written segment and remove its rows, in the writer's transaction."""

    def __init__(self, manifest: Manifest, directory: str) -> None:
        super().__init__()
        self.manifest = manifest
        self.directory = directory

    async def apply(self, batch: Batch) -> SegmentRecord:
        m, conn = self.manifest, batch.conn
        found = await conn.fetchrow(PREFIX)
        last_pos, last_hash = (found[0], found[1]) if found else (0, chain.GENESIS_HASH)
        if (last_pos, last_hash) != (m.first_pos - 1, m.prev_hash):
            raise ArchiveError(
                f"the archived prefix moved to pos {last_pos} while {m.segment} was written"
                " (another archiver?); nothing was removed"
            )
        counted = await conn.fetchrow(
            "SELECT count(*), (SELECT hash FROM events WHERE pos = $2) FROM events"
            " WHERE pos BETWEEN $1 AND $2",
            m.first_pos,
            m.last_pos,
        )
        count, end_hash = (0, None) if counted is None else (counted[0], counted[1])
        if count != m.rows or end_hash != m.last_hash:
            raise ArchiveError(
                f"the live rows at pos {m.first_pos} to {m.last_pos} differ from {m.segment};"
                " nothing was removed"
            )
        digest = m.digest()
        data = segment_event_data(m, self.directory, digest)
        run_id = new_run_id(batch.now)
        await conn.execute(
            "INSERT INTO runs (id, function, params, status, attempt, max_attempts, last_seq,"
            " created_at, updated_at, started_at)"
            " VALUES ($1, $2, '{}', 'running', 0, 1, 0, $3, $3, $3)",
            run_id,
            ARCHIVE_FUNCTION,
            batch.now_iso,
        )
        batch.runs[run_id] = RunState(attempt=0, status=RunStatus.RUNNING, last_seq=0)
        event = batch.add_event(segment_event(run_id, m, data))
        batch.add_event(archived_event(run_id, m, data))
        await batch.flush()
        record = SegmentRecord(
            m.segment, self.directory, m.first_pos, m.last_pos, m.prev_hash, m.last_hash,
            digest, m.rows, len(m.runs), event.pos, batch.now_iso,
        )  # fmt: skip
        await conn.execute(
            f"INSERT INTO archive_segments ({COLUMNS})"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            *(getattr(record, name.strip()) for name in COLUMNS.split(",")),
        )
        await conn.execute(
            "UPDATE runs SET archived_segment = $1 WHERE id = ANY($2::text[])", m.segment, m.runs
        )
        await conn.execute(
            "DELETE FROM events WHERE pos BETWEEN $1 AND $2", m.first_pos, m.last_pos
        )
        return record


async def grant_archiver_role(url: str, role: str) -> None:
    """`steplog migrate --archiver-role ROLE`: the one role that may archive (DELETE events)."""
    from storage.postgres.errors import translate
    from storage.postgres.migrations import _quote_ident
    from storage.sqlfiles import POSTGRES as QUERIES

    try:
        conn = await asyncpg.connect(url)
        try:
            schema = await conn.fetchval("SELECT current_schema()")
            sql = QUERIES["grant_archiver_role"].format(
                schema=_quote_ident(schema), role=_quote_ident(role)
            )
            await conn.execute(sql)
        finally:
            await conn.close()
    except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
        raise translate(exc) from exc
