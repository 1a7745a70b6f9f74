"""What the live log keeps about its archive, and what a backend must provide for it.

Each backend implements `ArchiveStore` over its own log (storage/sqlite/archive.py,
storage/postgres/archive.py), mostly through the shared `QueryStore` of
storage/archive/store.py; everything that decides *what* is archived and
*how* a segment is written and checked is shared (storage/archive/).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from storage.archive.chunk import Chunk
from storage.archive.plan import RunSpan
from storage.archive.segment import Manifest, Row
from storage.chain import GENESIS_HASH

ARCHIVE_FUNCTION = "steplog.archive"
"""The function name of the run each archiving is recorded as (a finished run, so it
is itself archived later like any other)."""

SEGMENT_EVENT = "archive.segment"
"""The event type that records a segment in the chained log."""

COLUMNS = (
    "segment, directory, first_pos, last_pos, prev_hash, last_hash, manifest_sha256,"
    " rows, runs, event_pos, created_at"
)
"""The columns of `archive_segments` in the order of `SegmentRecord`'s fields."""


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    """One row of `archive_segments`: a segment the live log no longer holds."""

    segment: str
    directory: str
    first_pos: int
    last_pos: int
    prev_hash: str
    last_hash: str
    manifest_sha256: str
    rows: int
    runs: int
    event_pos: int
    """Where the `archive.segment` event recording it sits in the chain."""
    created_at: str

    def as_json(self) -> dict[str, Any]:
        return {
            "segment": self.segment,
            "directory": self.directory,
            "first_pos": self.first_pos,
            "last_pos": self.last_pos,
            "last_hash": self.last_hash,
            "manifest_sha256": self.manifest_sha256,
            "archived_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class Prefix:
    """The archived prefix: positions 1..`last_pos` are in `segments` segments, and the
    live log's first row links to `last_hash`. (0, genesis, 0) when nothing is archived."""

    last_pos: int = 0
    last_hash: str = GENESIS_HASH
    segments: int = 0


def segment_event_data(manifest: Manifest, directory: str, digest: str) -> dict[str, Any]:
    """The data of the `archive.segment` event: the manifest's anchors and its hash."""
    return {
        "segment": manifest.segment,
        "directory": directory,
        "manifest_sha256": digest,
        "first_pos": manifest.first_pos,
        "last_pos": manifest.last_pos,
        "prev_hash": manifest.prev_hash,
        "last_hash": manifest.last_hash,
        "rows": manifest.rows,
        "runs": len(manifest.runs),
        "sha256": manifest.sha256,
    }


class ArchiveStore(Protocol):
    """A backend's side of archiving, over an open log."""

    async def check_allowed(self) -> None:
        """`ArchiveNotAllowed` when this connection's role may not archive; checked before
        any segment is written, so a role without the grants costs nothing."""

    async def prefix(self) -> Prefix:
        """The archived prefix as the live log records it."""

    async def head(self) -> int:
        """The highest position written."""

    async def spans(self, start: int, window_end: int, cutoff_iso: str) -> list[RunSpan]:
        """Every run whose first event is in `start + 1 .. window_end`, by first event."""

    async def rows(self, first: int, last: int) -> list[Row]:
        """The stored rows at positions `first .. last`, in order."""

    async def chunk(self, first: int, last: int, prev_hash: str) -> Chunk:
        """Positions `first .. last` as a segment's lines, checked to continue the chain
        from `prev_hash` (`ArchiveError` when they do not: nothing is archived)."""

    async def commit(self, manifest: Manifest, directory: str) -> SegmentRecord:
        """In one transaction: record the segment, write its `archive.segment` event,
        mark its runs archived and delete its rows. `ArchiveError` (nothing changed) when
        the live log no longer matches the manifest."""

    async def records(self) -> list[SegmentRecord]:
        """Every segment recorded, by position."""

    async def run_segment(self, run_id: str) -> SegmentRecord | None:
        """The segment holding `run_id`'s events, or None when they are live."""
