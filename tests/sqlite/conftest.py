"""What the unit tests of the worker and the log share: a real SQLite log in a temporary
directory, and a wait on a condition with a deadline (never a sleep as synchronisation)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from storage import EventLog, open_log


@pytest.fixture
async def events(tmp_path: Path) -> AsyncIterator[EventLog]:
    """A real SQLite event log, opened for the test and closed after it."""
    log = open_log(str(tmp_path / "unit.db"))
    await log.open()
    yield log
    await log.close()


async def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll an async predicate until it returns something truthy, within a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met before the deadline")


async def finished(events: EventLog, run_id: str, timeout: float = 10.0) -> Any:
    """The run once it has ended."""

    async def check() -> Any:
        run = await events.get_run(run_id)
        return run if run.status.finished else None

    return await wait_for(check, timeout)
