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
from dataclasses import astuple
from typing import TYPE_CHECKING, Any

import asyncpg

from storage.archive.chunk import Chunk, chunk_from_rows
from storage.archive.commit import check_prefix, check_range, record_segment
from storage.archive.plan import RunSpan, span_of
from storage.archive.records import ARCHIVE_FUNCTION, Prefix, SegmentRecord
from storage.archive.segment import ArchiveError, ArchiveNotAllowed, Manifest, Row
from storage.postgres.batch import Batch, Operation
from storage.runids import new_run_id
from storage.sqlfiles import POSTGRES as QUERIES

if TYPE_CHECKING:
    from storage.postgres.log import PostgresEventLog


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
        [row] = await self._rows(QUERIES["archive_allowed"])
        if not (row[1] and row[2]):
            raise ArchiveNotAllowed(
                f"the PostgreSQL role {row[0]} may not archive (it has no DELETE on events):"
                f" grant it with `steplog migrate --archiver-role {row[0]}` run by the schema's"
                " owner, or archive through a role that has it (`steplog log archive --db"
                " URL`; for retention in `steplog serve`, set STEPLOG_ARCHIVE_DB to that"
                " role's URL); nothing was removed"
            )

    async def prefix(self) -> Prefix:
        rows = await self._rows(QUERIES["archive_prefix"])
        return Prefix(int(rows[0][0]), str(rows[0][1]), int(rows[0][2])) if rows else Prefix()

    async def head(self) -> int:
        return await self.log.head()

    async def spans(self, start: int, window_end: int, cutoff_iso: str) -> list[RunSpan]:
        return [
            span_of(tuple(r), cutoff_iso)
            for r in await self._rows(QUERIES["archive_spans"], start, window_end)
        ]

    async def rows(self, first: int, last: int) -> list[Row]:
        return [tuple(r) for r in await self._rows(QUERIES["read_range"], first, last)]

    async def chunk(self, first: int, last: int, prev_hash: str) -> Chunk:
        rows = await self.rows(first, last)
        return await asyncio.to_thread(chunk_from_rows, rows, first, last, prev_hash)

    async def commit(self, manifest: Manifest, directory: str) -> SegmentRecord:
        record: SegmentRecord = await self.log._submit(ArchiveOp(manifest, directory))
        return record

    async def records(self) -> list[SegmentRecord]:
        rows = await self._rows(QUERIES["archive_segments"])
        return [SegmentRecord(*r) for r in rows]

    async def run_segment(self, run_id: str) -> SegmentRecord | None:
        rows = await self._rows(QUERIES["run_segment"], run_id)
        return SegmentRecord(*rows[0]) if rows else None


class ArchiveOp(Operation[SegmentRecord]):
    """Record a written segment and remove its rows, in the writer's transaction."""

    def __init__(self, manifest: Manifest, directory: str) -> None:
        super().__init__()
        self.manifest = manifest
        self.directory = directory

    async def apply(self, batch: Batch) -> SegmentRecord:
        m, conn = self.manifest, batch.conn
        check_prefix(await conn.fetchrow(QUERIES["archive_prefix"]), m)
        counted = await conn.fetchrow(QUERIES["archive_range_check"], m.first_pos, m.last_pos)
        count, end_hash = (0, None) if counted is None else (counted[0], counted[1])
        check_range(count, end_hash, m)
        run_id = new_run_id(batch.now)
        await conn.execute(QUERIES["insert_archive_run"], run_id, ARCHIVE_FUNCTION, batch.now_iso)
        record = record_segment(batch, run_id, m, self.directory, m.digest())
        await batch.flush()
        await conn.execute(QUERIES["insert_segment"], *astuple(record))
        await conn.execute(QUERIES["mark_archived"], m.segment, m.runs)
        await conn.execute(QUERIES["delete_archived"], m.first_pos, m.last_pos)
        return record


async def grant_archiver_role(url: str, role: str) -> None:
    """`steplog migrate --archiver-role ROLE`: the one role that may archive (DELETE events)."""
    from storage.postgres.errors import translate
    from storage.postgres.migrations import _quote_ident

    try:
        conn = await asyncpg.connect(url)
        try:
            schema = await conn.fetchval(QUERIES["current_schema_name"])
            sql = QUERIES["grant_archiver_role"].format(
                schema=_quote_ident(schema), role=_quote_ident(role)
            )
            await conn.execute(sql)
        finally:
            await conn.close()
    except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
        raise translate(exc) from exc
