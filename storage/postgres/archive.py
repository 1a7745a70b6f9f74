"""The PostgreSQL side of archiving (storage/archive/): the shared store and commit of
storage/archive/store.py over PostgreSQL's queries, the commit as one operation of the
log's writer.

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

from dataclasses import astuple
from typing import TYPE_CHECKING, Any

import asyncpg

from storage.archive import store
from storage.archive.records import ARCHIVE_FUNCTION, SegmentRecord
from storage.archive.segment import ArchiveError, ArchiveNotAllowed, Manifest
from storage.postgres.batch import Batch, Operation
from storage.runids import new_run_id
from storage.sqlfiles import POSTGRES as QUERIES

if TYPE_CHECKING:
    from storage.postgres.log import PostgresEventLog


class PostgresArchive(store.QueryStore):
    """`ArchiveStore` over an open `PostgresEventLog`."""

    def __init__(self, log: PostgresEventLog) -> None:
        self.log = log

    async def _query(self, name: str, *args: Any) -> list[Any]:
        pool = self.log._pool
        if pool is None:
            raise ArchiveError("the log is closed")
        try:
            return list(await pool.fetch(QUERIES[name], *args))
        except asyncpg.PostgresError as exc:
            raise ArchiveError(f"PostgreSQL refused: {exc}") from None

    def _commit_op(self, manifest: Manifest, directory: str) -> ArchiveOp:
        return ArchiveOp(manifest, directory)

    async def check_allowed(self) -> None:
        """The role must hold what `steplog migrate --archiver-role` grants; the app role
        of `--app-role` does not, on purpose."""
        [row] = await self._query("archive_allowed")
        if not (row[1] and row[2]):
            raise ArchiveNotAllowed(
                f"the PostgreSQL role {row[0]} may not archive (it has no DELETE on events):"
                f" grant it with `steplog migrate --archiver-role {row[0]}` run by the schema's"
                " owner, or archive through a role that has it (`steplog log archive --db"
                " URL`; for retention in `steplog serve`, set STEPLOG_ARCHIVE_DB to that"
                " role's URL); nothing was removed"
            )


class ArchiveOp(store.CommitSegment, Operation[SegmentRecord]):
    async def apply(self, batch: Batch) -> SegmentRecord:
        m, conn = self.manifest, batch.conn
        store.check_prefix(await conn.fetchrow(QUERIES["archive_prefix"]), m)
        counted = await conn.fetchrow(QUERIES["archive_range_check"], m.first_pos, m.last_pos)
        count, end_hash = (0, None) if counted is None else (counted[0], counted[1])
        store.check_range(count, end_hash, m)
        run_id = new_run_id(batch.now)
        await conn.execute(QUERIES["insert_archive_run"], run_id, ARCHIVE_FUNCTION, batch.now_iso)
        record = store.record_segment(batch, run_id, m, self.directory, m.digest())
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
