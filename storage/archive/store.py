"""The `ArchiveStore` of both backends, written once: reads by query name, and what an
archive commit checks and records.

Both backends' queries.sql hold the archive's statements under the same names, so
`QueryStore` reads them the same way through one `_query` per backend
(storage/sqlite/archive.py, storage/postgres/archive.py). Each backend's `ArchiveOp`
runs inside its writer's transaction and only sends the statements; the checks
that refuse a segment and the two chained events that record it are decided
here, once, so both backends commit a segment on the same terms and write the
same events for it.
"""

from __future__ import annotations

import abc
import asyncio
from typing import Any

from storage import chain
from storage.archive.chunk import Chunk, chunk_from_rows
from storage.archive.plan import RunSpan, span_of
from storage.archive.records import SEGMENT_EVENT, Prefix, SegmentRecord, segment_event_data
from storage.archive.segment import ArchiveError, Manifest, Row
from storage.model import EventType, NewEvent, RunStatus
from storage.numbering import Numbering, RunState
from storage.writer.writes import Pending


class QueryStore(abc.ABC):
    """An `ArchiveStore` whose reads are its backend's named queries."""

    log: Any
    """The open event log (its `head` and `_submit`)."""

    @abc.abstractmethod
    async def _query(self, name: str, *args: Any) -> list[Any]:
        """The rows of the backend's query `name` (on a reader, outside any write)."""

    @abc.abstractmethod
    def _commit_op(self, manifest: Manifest, directory: str) -> Any:
        """The backend's `ArchiveOp`, for its writer."""

    async def prefix(self) -> Prefix:
        rows = await self._query("archive_prefix")
        return Prefix(int(rows[0][0]), str(rows[0][1]), int(rows[0][2])) if rows else Prefix()

    async def head(self) -> int:
        head: int = await self.log.head()
        return head

    async def spans(self, start: int, window_end: int, cutoff_iso: str) -> list[RunSpan]:
        rows = await self._query("archive_spans", start, window_end)
        return [span_of(tuple(row), cutoff_iso) for row in rows]

    async def rows(self, first: int, last: int) -> list[Row]:
        return [tuple(row) for row in await self._query("read_range", first, last)]

    async def chunk(self, first: int, last: int, prev_hash: str) -> Chunk:
        rows = await self.rows(first, last)
        return await asyncio.to_thread(chunk_from_rows, rows, first, last, prev_hash)

    async def commit(self, manifest: Manifest, directory: str) -> SegmentRecord:
        record: SegmentRecord = await self.log._submit(self._commit_op(manifest, directory))
        return record

    async def records(self) -> list[SegmentRecord]:
        return [SegmentRecord(*row) for row in await self._query("archive_segments")]

    async def run_segment(self, run_id: str) -> SegmentRecord | None:
        rows = await self._query("run_segment", run_id)
        return SegmentRecord(*rows[0]) if rows else None


class CommitSegment(Pending[SegmentRecord]):
    """Record a written segment and remove its rows, in the writer's transaction (the
    request; each backend's `ArchiveOp` applies it, as storage/writer/writes.py's)."""

    def __init__(self, manifest: Manifest, directory: str) -> None:
        super().__init__()
        self.manifest = manifest
        self.directory = directory


def check_prefix(found: Any, m: Manifest) -> None:
    """Refuse a segment that does not continue the archived prefix as it stands now
    (`found`: the `archive_prefix` row, None before the first segment)."""
    last_pos, last_hash = (found[0], found[1]) if found else (0, chain.GENESIS_HASH)
    if (last_pos, last_hash) != (m.first_pos - 1, m.prev_hash):
        raise ArchiveError(
            f"the archived prefix moved to pos {last_pos} while {m.segment} was written"
            " (another archiver?); nothing was removed"
        )


def check_range(count: int, end_hash: str | None, m: Manifest) -> None:
    """Refuse a segment whose live rows changed since it was written (`count` rows in its
    range, `end_hash` the hash at its last pos: the `archive_range_check` row)."""
    if count != m.rows or end_hash != m.last_hash:
        raise ArchiveError(
            f"the live rows at pos {m.first_pos} to {m.last_pos} differ from {m.segment};"
            " nothing was removed"
        )


def record_segment(
    batch: Numbering, run_id: str, m: Manifest, directory: str, digest: str
) -> SegmentRecord:
    """Number the segment's two events in `run_id` (whose row the backend has just
    inserted, running) and return the `archive_segments` record to insert after them."""
    data = segment_event_data(m, directory, digest)
    batch.runs[run_id] = RunState(attempt=0, status=RunStatus.RUNNING, last_seq=0)
    event = batch.add_event(segment_event(run_id, m, data))
    batch.add_event(archived_event(run_id, m, data))
    return SegmentRecord(
        m.segment, directory, m.first_pos, m.last_pos, m.prev_hash, m.last_hash,
        digest, m.rows, len(m.runs), event.pos, batch.now_iso,
    )  # fmt: skip


def segment_event(run_id: str, m: Manifest, data: dict[str, object]) -> NewEvent:
    return NewEvent(
        run_id, SEGMENT_EVENT, attempt=0,
        message=f"pos {m.first_pos} to {m.last_pos} ({m.rows} events of {len(m.runs)} runs)"
        f" moved to {m.segment}",
        data=data,
    )  # fmt: skip


def archived_event(run_id: str, m: Manifest, data: dict[str, object]) -> NewEvent:
    return NewEvent(
        run_id, EventType.RUN_SUCCEEDED, attempt=0, message=f"archived {m.segment}",
        data={"result": data},
    )  # fmt: skip
