"""Archived runs over HTTP: `GET /runs/{id}` says where a run's events went, and its
stream replays them from the segment (read-only) or says clearly why it cannot.

The routes call these two functions and otherwise treat an archived run like
any finished one (stream/http/runs.py, stream/sse/routes.py).
"""

from __future__ import annotations

import logging
from typing import Any

from storage import EventLog, Run
from storage.archive import ArchiveError, SegmentRecord, store_for
from storage.archive.replay import SegmentRun, locate
from stream.http.problems import HTTPProblem
from stream.settings import Settings

log = logging.getLogger("steplog.archive")


async def segment_of(events: EventLog, run: Run) -> SegmentRecord | None:
    """The segment holding a finished run's events; None while they are live."""
    if not run.status.finished:
        return None
    try:
        return await store_for(events).run_segment(run.id)
    except ArchiveError:
        return None


async def archived_json(events: EventLog, run: Run) -> dict[str, Any]:
    """`{"archived": {...}}` for an archived run (merged into the run's JSON), else `{}`."""
    record = await segment_of(events, run)
    return {} if record is None else {"archived": record.as_json()}


async def archived_source(events: EventLog, settings: Settings, run: Run) -> SegmentRun | None:
    """What to replay an archived run from; None for a live run. 410 when the segment is
    not where it was written nor in the archive directory, or does not verify."""
    record = await segment_of(events, run)
    if record is None:
        return None
    folder = locate(record, settings.archive_path)
    if folder is None:
        raise HTTPProblem(
            410,
            "Run archived",
            f"the run's events were archived to {record.segment} in {record.directory},"
            " which this server cannot read; verify and read it with"
            " `steplog audit verify --archive DIR`",
            segment=record.segment,
            directory=record.directory,
        )
    source = SegmentRun(record, folder, run.id)
    try:
        await source.events()
    except ArchiveError as exc:
        log.error("archived run %s cannot be replayed: %s", run.id, exc)
        raise HTTPProblem(
            410, "Run archived", f"the run's events were archived, but {exc}",
            segment=record.segment, directory=record.directory,
        ) from None  # fmt: skip
    return source
