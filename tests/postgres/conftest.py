"""Fixtures of the PostgreSQL tests (helpers they import: tests/postgres/logs.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from storage.postgres.log import PostgresEventLog


@pytest.fixture
async def open_logs(pg_url: str) -> AsyncIterator[Callable[..., PostgresEventLog]]:
    """Open any number of logs on the schema (as separate processes would); all closed after."""
    opened: list[PostgresEventLog] = []

    def make(**options: object) -> PostgresEventLog:
        log = PostgresEventLog(pg_url, **options)  # type: ignore[arg-type]
        opened.append(log)
        return log

    yield make
    for log in opened:
        await log.close()
