"""The SQLite side of `steplog log copy` (storage/copy.py): a copy into an empty file.

The file is created (or opened) as steplog creates its logs, with the schema,
WAL mode and owner-only permissions, and then filled in one `BEGIN IMMEDIATE`
transaction: SQLite's write lock keeps every steplog writer out meanwhile, and
an error anywhere rolls the file back to empty. Positions are inserted as
they were, so AUTOINCREMENT's high-water mark ends at the copied head, as the
audit expects.
"""

from __future__ import annotations

import asyncio
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

from storage.copy import require_empty
from storage.errors import SteplogError
from storage.model import Event
from storage.sqlfiles import SQLITE as Q
from storage.sqlite.log import SQLiteEventLog


class SQLiteCopyTarget:
    """An empty SQLite log file (created when missing) taking a copy."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None

    async def _do(self, sql: str, args: Any = (), *, many: bool = False) -> list[Any]:
        conn = self.conn
        if conn is None:
            raise SteplogError("the copy target is not open")

        def run() -> list[Any]:
            if many:
                conn.executemany(sql, args)
                return []
            return conn.execute(sql, args).fetchall()

        try:
            return await asyncio.to_thread(run)
        except sqlite3.Error as exc:
            raise SteplogError(f"writing the copy into {self.path} failed: {exc}") from exc

    async def begin(self) -> None:
        if self.path.is_file() and self.path.stat().st_size and not _is_steplog(self.path):
            raise SteplogError(f"{self.path} is another database, not a steplog log")
        log = SQLiteEventLog(self.path)
        await log.open()  # creates the file as steplog does, with its schema
        await log.close()
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        await self._do("PRAGMA busy_timeout = 10000")
        await self._do(Q["begin_immediate"])
        [(runs, events)] = await self._do(Q["count_rows"])
        require_empty(runs, events)

    async def put_runs(self, records: list[tuple[object, ...]]) -> None:
        await self._do(Q["copy_runs"], records, many=True)

    async def put_events(self, records: list[tuple[object, ...]]) -> None:
        await self._do(Q["insert_events"], records, many=True)

    async def put_secret(self, key: str, value: bytes) -> None:
        await self._do(Q["insert_secret"], (key, value))

    async def read_back(self, after: int, limit: int) -> list[Event]:
        rows = await self._do(Q["read_all"], (after, limit))
        return [Event(*row) for row in rows]

    async def runs_out_of_step(self) -> int:
        [(count,)] = await self._do(Q["runs_out_of_step"])
        return int(count)

    async def commit(self) -> None:
        await self._do(Q["commit"])

    async def abort(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            if conn.in_transaction:
                conn.execute(Q["rollback"])
        finally:
            conn.close()


def _is_steplog(path: Path) -> bool:
    """Whether the file is a steplog log (never add steplog's tables to another database)."""
    try:
        conn = sqlite3.connect(f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro", uri=True)
        try:
            names = {row[0] for row in conn.execute(Q["table_names"])}
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False
    return {"events", "runs"} <= names
