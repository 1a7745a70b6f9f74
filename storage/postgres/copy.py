"""The PostgreSQL side of `steplog log copy` (storage/copy.py): COPY into an empty log.

The whole copy is one transaction holding the append lock, so no steplog
process can write the target meanwhile, and an error anywhere rolls it back.
Rows go in with `COPY … FROM STDIN` (`copy_records_to_table`), the fastest
way into PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import asyncpg
from asyncpg.transaction import Transaction

from storage.copy import EVENT_COLUMNS, RUN_COLUMNS, require_empty
from storage.errors import SteplogError
from storage.model import Event
from storage.postgres import migrations
from storage.postgres.errors import translate
from storage.postgres.rows import event_from_record
from storage.sqlfiles import POSTGRES as QUERIES

T = TypeVar("T")
_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


async def _translated(step: Awaitable[T]) -> T:
    try:
        return await step
    except _FAILURES as exc:
        raise translate(exc) from exc


class PostgresCopyTarget:
    """An empty PostgreSQL log (its schema is created) taking a copy."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: asyncpg.Connection | None = None
        self.transaction: Transaction | None = None

    def _conn(self) -> asyncpg.Connection:
        if self.conn is None:
            raise SteplogError("the copy target is not open")
        return self.conn

    async def begin(self) -> None:
        self.conn = await _translated(asyncpg.connect(self.url))
        conn = self.conn
        await _translated(migrations.migrate(conn))
        self.transaction = conn.transaction()
        await _translated(self.transaction.start())
        # Hold the append lock: no steplog process can write the target meanwhile.
        key = await _translated(conn.fetchval(QUERIES["append_lock_key"]))
        await _translated(conn.execute(QUERIES["append_lock"], key))
        counts = await _translated(conn.fetchrow(QUERIES["count_rows"]))
        require_empty(*((0, 0) if counts is None else counts))

    async def put_runs(self, records: list[tuple[object, ...]]) -> None:
        conn = self._conn()
        await _translated(conn.copy_records_to_table("runs", records=records, columns=RUN_COLUMNS))

    async def put_events(self, records: list[tuple[object, ...]]) -> None:
        conn = self._conn()
        await _translated(
            conn.copy_records_to_table("events", records=records, columns=EVENT_COLUMNS)
        )

    async def put_secret(self, key: str, value: bytes) -> None:
        await _translated(self._conn().execute(QUERIES["insert_secret"], key, value))

    async def read_back(self, after: int, limit: int) -> list[Event]:
        rows = await _translated(self._conn().fetch(QUERIES["read_all"], after, limit))
        return [event_from_record(row) for row in rows]

    async def runs_out_of_step(self) -> int:
        count: int = await _translated(self._conn().fetchval(QUERIES["runs_out_of_step"]))
        return count

    async def commit(self) -> None:
        if self.transaction is not None:
            await _translated(self.transaction.commit())
            self.transaction = None

    async def abort(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            if self.transaction is not None and not conn.is_closed():
                await self.transaction.rollback()
        except _FAILURES:
            pass  # closing the connection rolls it back anyway
        finally:
            self.transaction = None
            await conn.close()
