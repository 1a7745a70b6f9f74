"""The one code path that removes rows from the live log: archive whole, finished runs.

Order of operations, so that a crash at any point loses nothing:

1. plan: the largest prefix `start + 1 .. P` made only of whole runs that ended
   before the cutoff (`storage.archive.plan`), at most about `max_events` rows;
2. read those rows once, as the segment's lines, and check them: they must
   continue the chain from the recorded prefix's hash (a log that does not
   verify is never archived; `ArchiveStore.chunk`);
3. write the segment and its manifest (temporary file, fsync, rename, fsync
   the directory), then read the file back: the same bytes, decompressing to
   exactly the checked lines;
4. one transaction, through the log's writer: record the segment, append the
   `archive.segment` event (chained, so archiving is audited), mark the runs
   archived, delete the rows. The database only lets rows at or below a
   recorded segment be deleted (storage/sqlite/004_archive.sql,
   storage/postgres/003_archive.sql).

Killed before 4 commits, the live log is untouched and the directory holds a
segment nobody recorded: the next run deletes it (`remove_uncommitted`) and
writes it again. Killed after, the segment is recorded and complete.
Archiving goes chunk by chunk (one transaction each), so the writer is never
held for long.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from storage.archive.chunk import Chunk
from storage.archive.plan import Cut, RunSpan, choose_cut
from storage.archive.records import ArchiveStore, SegmentRecord
from storage.archive.segment import (
    ArchiveError,
    Manifest,
    prepare_directory,
    remove_uncommitted,
    same_content,
    write_segment,
)
from storage.timefmt import iso

log = logging.getLogger("steplog.archive")

MAX_EVENTS = 50_000
"""Rows per segment (and per transaction): small enough that the writer is held for a
fraction of a second, large enough that a million events make twenty segments."""


@dataclass(slots=True)
class ArchiveResult:
    """What one archiving pass did."""

    segments: list[SegmentRecord] = field(default_factory=list)
    blocked_by: RunSpan | None = None
    removed_stale: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def events(self) -> int:
        return sum(record.rows for record in self.segments)

    @property
    def runs(self) -> int:
        return sum(record.runs for record in self.segments)

    def lines(self) -> list[str]:
        out = [
            f"archived {record.segment}: pos {record.first_pos} to {record.last_pos},"
            f" {record.rows} events of {record.runs} runs"
            for record in self.segments
        ]
        if self.segments:
            out.append(
                f"archived {self.events} events of {self.runs} runs in {len(self.segments)}"
                f" segment(s) in {self.elapsed_s:.1f}s"
            )
        else:
            out.append("nothing to archive")
        if self.blocked_by is not None:
            span = self.blocked_by
            out.append(
                f"stopped at pos {span.first_pos}: run {span.run_id} {span.why}"
                " (archiving keeps the log a prefix of whole, ended runs)"
            )
        for name in self.removed_stale:
            out.append(f"removed {name}, left by an archiver that did not finish")
        return out


async def archive(
    store: ArchiveStore,
    directory: Path,
    cutoff: float,
    *,
    max_events: int = MAX_EVENTS,
    max_segments: int | None = None,
    clock: Callable[[], float] = time.time,
) -> ArchiveResult:
    """Archive every whole run that ended before `cutoff` (a Unix time) into `directory`."""
    started = time.perf_counter()
    await store.check_allowed()
    folder = await asyncio.to_thread(prepare_directory, directory)
    result = ArchiveResult()
    prefix = await store.prefix()
    result.removed_stale = await asyncio.to_thread(remove_uncommitted, folder, prefix.last_pos)
    cutoff_iso = iso(cutoff)
    # Only what was written before this pass: each segment adds the archive's own events
    # (a finished run), which would otherwise be archived in turn, forever.
    head = await store.head()
    while max_segments is None or len(result.segments) < max_segments:
        prefix = await store.prefix()
        cut = await plan(store, prefix.last_pos, cutoff_iso, max_events, head)
        result.blocked_by = cut.blocked_by
        if cut.last_pos is None:
            break
        chunk = await store.chunk(prefix.last_pos + 1, cut.last_pos, prefix.last_hash)
        now = iso(clock())
        written = await asyncio.to_thread(write_segment, folder, chunk, now)
        await asyncio.to_thread(_read_back, folder, written, chunk)
        record = await store.commit(written, str(folder))
        log.info(
            "archived %s: pos %d to %d, %d events", record.segment, record.first_pos,
            record.last_pos, record.rows,
        )  # fmt: skip
        result.segments.append(record)
    result.elapsed_s = time.perf_counter() - started
    return result


async def plan(store: ArchiveStore, start: int, cutoff_iso: str, max_events: int, head: int) -> Cut:
    """The cut for the next segment, at most at `head`; the window widens only when one
    run is longer than it."""
    window = max_events
    while True:
        end = min(start + window, head)
        cut = choose_cut(start, await store.spans(start, end, cutoff_iso), end)
        if not cut.needs_wider or end >= head:
            return cut
        window *= 4


def _read_back(folder: Path, manifest: Manifest, chunk: Chunk) -> None:
    """The segment as it is on disk must be exactly the lines written (which were checked
    to continue the chain): the same compressed bytes, decompressing to the same lines."""
    if not same_content(folder / manifest.segment, chunk, manifest.sha256):
        raise ArchiveError(
            f"segment {manifest.segment} reads back different from what was written;"
            " nothing was removed"
        )
