"""Automatic retention in `steplog serve`: `STEPLOG_RETENTION_DAYS` archives runs that
ended more than that many days ago, once at start and then every hour.

It is the same archiver as `steplog log archive` (storage/archive/), in chunks
of at most `MAX_EVENTS` rows, one writer transaction each, so appends wait for
a fraction of a second at most. It runs as a background task of its own: a
failure (a full disk where the segments go, an archive role missing on
PostgreSQL) is logged and tried again at the next round, and never stops the
server. It is a `while_serving` hook, so it starts after the log is open and is
stopped before the log closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator

from quart import Quart

from storage import EventLog, SteplogError
from storage.archive import archive, store_for
from stream.settings import Settings

log = logging.getLogger("steplog.retention")

INTERVAL = 3600.0
"""Seconds between archiving rounds."""


async def retention_loop(events: EventLog, settings: Settings, interval: float = INTERVAL) -> None:
    """Archive what is old enough, now and every `interval` seconds, until cancelled."""
    assert settings.retention_days is not None
    while True:
        cutoff = time.time() - settings.retention_days * 86400
        try:
            result = await archive(store_for(events), settings.archive_path, cutoff)
            if result.segments:
                log.info("retention: %s", "; ".join(result.lines()))
        except (SteplogError, OSError) as exc:
            log.error("retention: archiving failed, nothing was removed: %s", exc)
        except Exception:
            log.exception("retention: archiving failed, nothing was removed")
        await asyncio.sleep(interval)


def install(app: Quart, settings: Settings, events: EventLog) -> None:
    """Run the retention loop while the app serves (only when STEPLOG_RETENTION_DAYS is set)."""
    if settings.retention_days is None:
        return

    @app.while_serving
    async def retention() -> AsyncGenerator[None, None]:
        task = asyncio.create_task(retention_loop(events, settings), name="steplog-retention")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
