"""What the SQLite-tier tests share: a real SQLite log in a temporary directory
(`events`), the same log on each backend (`log_url`, `log`: SQLite, and a throwaway
PostgreSQL schema marked `needs("postgres")`), and `finished`, which waits (against a
deadline, `tests.support.wait`) for a run to end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage import EventLog, open_log
from tests.support import postgres as testing
from tests.support.wait import wait_for


@pytest.fixture
async def events(tmp_path: Path) -> AsyncIterator[EventLog]:
    """A real SQLite event log, opened for the test and closed after it."""
    log = open_log(str(tmp_path / "unit.db"))
    await log.open()
    yield log
    await log.close()


async def finished(events: EventLog, run_id: str, timeout: float = 10.0) -> Any:
    """The run once it has ended."""

    async def check() -> Any:
        run = await events.get_run(run_id)
        return run if run.status.finished else None

    return await wait_for(check, timeout, what=f"run {run_id} to finish")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.needs("postgres"))])
async def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh log's URL on each backend: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        yield str(tmp_path / "log.db")
        return
    async with testing.scratch_schema(testing.postgres_url_for_tests()) as url:
        yield url


@pytest.fixture
async def log(log_url: str) -> AsyncIterator[EventLog]:
    """That log, opened for the test and closed after it."""
    opened = open_log(log_url)
    await opened.open()
    yield opened
    await opened.close()
