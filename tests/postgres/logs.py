"""Helpers for tests that run several `PostgresEventLog` instances on one schema, as
several processes would (the fixture that opens them: tests/postgres/conftest.py)."""

from __future__ import annotations

import asyncpg

from storage.postgres.log import PostgresEventLog
from tests.support.wait import wait_for


async def running_run(log: PostgresEventLog) -> str:
    """A new run, claimed by worker "w1" (attempt 1): ready for appends."""
    run, _ = await log.create_run("ticker", {})
    claimed = await log.claim_run("w1", 60, ["ticker"])
    assert claimed is not None and claimed.id == run.id
    return run.id


async def waiting_for_a_lock(url: str, log: PostgresEventLog, timeout: float = 10.0) -> str:
    """Until `log`'s writer connection is blocked on a lock (`pg_stat_activity`); returns
    the statement it is blocked in."""
    conn = await asyncpg.connect(url)

    async def blocked() -> str | None:
        pid = log.writer_pid
        if pid is None:
            return None
        query: str | None = await conn.fetchval(
            "SELECT query FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'", pid
        )
        return query

    try:
        return await wait_for(
            blocked, timeout, interval=0.01, what="the writer to wait for the append lock"
        )
    finally:
        await conn.close()
