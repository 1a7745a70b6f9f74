"""Automatic retention in `steplog serve`: `STEPLOG_RETENTION_DAYS` archives runs that
ended more than that many days ago, once at start and then every hour.

It is the same archiver as `steplog log archive` (storage/archive/), in chunks
of at most `MAX_EVENTS` rows, one writer transaction each, so appends wait for
a fraction of a second at most. It runs as a background task of its own and
never stops the server. It is a `while_serving` hook, so it starts after the
log is open and is stopped before the log closes.

The archiver's database (`STEPLOG_ARCHIVE_DB`). On PostgreSQL the server
should run as the app role of `steplog migrate --app-role`, which may not
delete an event; only the archiver role may. So retention can archive through
a URL of its own: set `STEPLOG_ARCHIVE_DB` to the archiver role's URL of the
same log. Unset, it archives through the server's own log (right for SQLite,
and for a PostgreSQL server running as a role that may archive).

Failures are logged on transitions, not every round: the first failure (one
line naming what to set when the role may not archive), a change of reason,
and the recovery. A role without the grants stays without them until an
operator acts, and an hourly identical error would bury the one line that says
what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from quart import Quart

from storage import EventLog, SteplogError, open_log
from storage.archive import ArchiveNotAllowed, ArchiveResult, archive, store_for
from stream.settings import Settings

log = logging.getLogger("steplog.retention")

INTERVAL = 3600.0
"""Seconds between archiving rounds."""


@dataclass(slots=True)
class Retention:
    """One server's retention: the rounds, and the failure last logged (if any)."""

    events: EventLog
    settings: Settings
    archive_db: str | None = None
    """The archiver's own URL (`STEPLOG_ARCHIVE_DB`); None: through `events`."""
    failing: str | None = None
    """The reason of the failure last logged; None while archiving works."""

    async def round(self) -> ArchiveResult | None:
        """Archive what is old enough now; None when it failed (logged on a transition)."""
        assert self.settings.retention_days is not None
        cutoff = time.time() - self.settings.retention_days * 86400
        try:
            result = await self._archive(cutoff)
        except ArchiveNotAllowed as exc:
            self._failed(str(exc), f"retention: cannot archive: {exc}")
            return None
        except (SteplogError, OSError) as exc:
            self._failed(str(exc), f"retention: archiving failed, nothing was removed: {exc}")
            return None
        except Exception as exc:  # never stop the loop; the traceback once, on a transition
            reason = f"{type(exc).__name__}: {exc}"
            if self.failing != reason:
                log.exception("retention: archiving failed, nothing was removed")
            self.failing = reason
            return None
        if self.failing is not None:
            log.info("retention: archiving works again")
            self.failing = None
        if result.segments:
            log.info("retention: %s", "; ".join(result.lines()))
        return result

    def _failed(self, reason: str, line: str) -> None:
        if self.failing != reason:
            log.error("%s", line)
        else:
            log.debug("%s (unchanged since it was logged)", line)
        self.failing = reason

    async def _archive(self, cutoff: float) -> ArchiveResult:
        if self.archive_db is None:
            return await archive(store_for(self.events), self.settings.archive_path, cutoff)
        # Opened for the round only: an hourly task need not hold connections, and a
        # database that was down at the last round is simply tried again.
        other = open_log(self.archive_db)
        await other.open()
        try:
            return await archive(store_for(other), self.settings.archive_path, cutoff)
        finally:
            await other.close()


def archive_db_of(settings: Settings) -> str | None:
    """The archiver's URL when it is another than the server's own, else None."""
    url = settings.archive_db
    return None if not url or url == settings.db else url


async def retention_loop(events: EventLog, settings: Settings, interval: float = INTERVAL) -> None:
    """Archive what is old enough, now and every `interval` seconds, until cancelled."""
    retention = Retention(events, settings, archive_db_of(settings))
    while True:
        await retention.round()
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
