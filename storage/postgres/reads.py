"""The read side of the PostgreSQL event log: runs, events, the head, counts.

Reads go through a small pool of their own and never hold a transaction open;
they never touch the writer's connection or the append lock (see
storage/postgres/log.py for how the global stream stays gap-free).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from storage.errors import StorageClosed
from storage.model import Event, Run
from storage.postgres.errors import translate
from storage.postgres.rows import event_from_record, run_from_record
from storage.sqlfiles import POSTGRES as QUERIES
from storage.writer.queued import QueuedLog


class PostgresReads(QueuedLog):
    """The reads of `PostgresEventLog`, through its reader pool."""

    clock: Callable[[], float]
    _pool: asyncpg.Pool | None

    # -- runs ------------------------------------------------------------------
    async def _find_run(self, run_id: str) -> Run | None:
        rows = await self._fetch("get_run", run_id)
        return run_from_record(rows[0]) if rows else None

    async def _runs_page(
        self, status: str | None, function: str | None, before: str | None, limit: int
    ) -> list[Run]:
        rows = await self._fetch("list_runs", status, function, before, limit)
        return [run_from_record(row) for row in rows]

    async def _claimable(self, functions: Sequence[str]) -> bool:
        [(claimable,)] = await self._fetch("claimable", list(functions), self.clock())
        return bool(claimable)

    async def read_run(self, run_id: str, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        rows = await self._fetch("read_run", run_id, after_seq, limit)
        return [event_from_record(row) for row in rows]

    async def read_all(self, after_pos: int = 0, limit: int = 1000) -> list[Event]:
        return [event_from_record(r) for r in await self._fetch("read_all", after_pos, limit)]

    async def head(self) -> int:
        [(head,)] = await self._fetch("head")
        return int(head)

    async def _stored_secret(self, key: str) -> bytes | None:
        rows = await self._fetch("get_secret", key)
        return bytes(rows[0][0]) if rows else None

    async def run_counts(self) -> dict[str, int]:
        rows = await self._fetch("run_counts")
        return {status: int(count) for status, count in rows}

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        if self._closed or self._pool is None:
            raise StorageClosed()
        try:
            rows: list[asyncpg.Record] = await self._pool.fetch(QUERIES[query], *args)
        except Exception as exc:
            raise translate(exc) from exc
        return rows


__all__ = ["PostgresReads"]
