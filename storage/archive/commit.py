"""What an archive commit checks and records, the same on SQLite and PostgreSQL.

Each backend's `ArchiveOp` (storage/sqlite/archive.py, storage/postgres/archive.py)
runs inside its writer's transaction and only sends the statements; the checks
that refuse a segment and the two chained events that record it are decided
here, once, so both backends commit a segment on the same terms and write the
same events for it.
"""

from __future__ import annotations

from typing import Any

from storage import chain
from storage.archive.records import SEGMENT_EVENT, SegmentRecord, segment_event_data
from storage.archive.segment import ArchiveError, Manifest
from storage.model import EventType, NewEvent, RunStatus
from storage.numbering import Numbering, RunState


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
