"""Helpers for tests that run several `PostgresEventLog` instances on one schema, as
several processes would (the fixture that opens them: tests/postgres/conftest.py)."""

from __future__ import annotations

import asyncpg
from asyncpg.connection import LoggedQuery

from storage.postgres.log import PostgresEventLog
from storage.sqlfiles import POSTGRES as QUERIES
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


def writer_statements(log: PostgresEventLog) -> list[LoggedQuery]:
    """Every statement `log`'s writer connection runs from now on (asyncpg's query
    logger: the text, and the exception it raised if any), to tell which way a group of
    appends went. Only that connection: a writer that reconnects is not followed."""
    conn = log._writer_conn
    assert conn is not None
    seen: list[LoggedQuery] = []
    conn.add_query_logger(seen.append)
    return seen


def short_way_outcomes(seen: list[LoggedQuery]) -> list[str]:
    """How each short-way statement among `seen` ended: "committed", or the SQLSTATE
    it raised ("SLSTA": the writer's cache was out of date)."""
    return [
        "committed" if q.exception is None else getattr(q.exception, "sqlstate", repr(q.exception))
        for q in seen
        if q.query == QUERIES["append_batch"]
    ]
