"""Archived runs over HTTP: `GET /runs/{id}` says where a run's events went, and its
stream replays them from the segment (read-only) or says clearly why it cannot.

The routes call these functions and otherwise treat an archived run like any
finished one (stream/http/runs.py, stream/sse/routes.py).

The global stream (`GET /events`) does not replay segments: a client resuming
from a position inside the archived prefix gets, before its first frame, one
SSE comment naming the range it will not see (`: archived A..B: …`). A comment,
not a `410`: `EventSource` ignores comments and keeps its connection and its
reconnects, where an error status would close it for good; a client that cares
(a consumer that must see every event) reads the comment and fetches the
archived runs (`GET /runs/{id}/events` replays one from its segment).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Any

from storage import EventLog, Run, SteplogError
from storage.archive import ArchiveError, SegmentRecord, store_for
from storage.archive.replay import SegmentRun, locate
from stream.http.problems import HTTPProblem
from stream.settings import Settings
from stream.sse.encoder import encode_comment

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


async def archived_gap(events: EventLog, cursor: int) -> bytes | None:
    """The comment a global stream resuming after `cursor` starts with, when positions
    after it were archived; None when the stream misses nothing."""
    try:
        prefix = await store_for(events).prefix()
    except (ArchiveError, SteplogError):
        return None
    if cursor >= prefix.last_pos:
        return None
    first, last = cursor + 1, prefix.last_pos
    return encode_comment(
        f"archived {first}..{last}: events {first} to {last} were moved to archive segments"
        f" and are not in this stream, which goes on from {last + 1}; an archived run's"
        " own stream (GET /runs/{id}/events) replays it from its segment"
    )


async def with_preface(
    preface: bytes, body: AsyncGenerator[bytes, None]
) -> AsyncGenerator[bytes, None]:
    """`body`, with `preface` sent first; closing this closes `body` (its `finally` gives
    the stream's slot back)."""
    try:
        yield preface
        async for chunk in body:
            yield chunk
    finally:
        await body.aclose()
