"""What the audit asks about the archive: where the live log starts, which run records
describe archived runs (their events are in segments, not in `events`), and whether
the archive's own records still hold.

Written over the audit's row-source (`storage.audit.source`), so the same
questions are asked of SQLite and PostgreSQL (both keep `archive_segments`
and `runs.archived_segment`), inside the verification's read snapshot. A log
from before archiving (no `archive_segments` table) reads as nothing archived,
so the audit checks it exactly as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from storage.archive.records import COLUMNS, SEGMENT_EVENT, Prefix, SegmentRecord
from storage.archive.segment import ArchiveError, read_rows
from storage.audit.model import ANCHOR, INSERTED, Anchor, Problem
from storage.audit.source import AuditSource

TABLE = "archive_segments"


def has_archive(source: AuditSource) -> bool:
    return source.has_table(TABLE)


def archived_prefix(source: AuditSource) -> Prefix:
    """The recorded archived prefix; nothing archived on a log without the table."""
    if not has_archive(source):
        return Prefix()
    row = source.fetchone(
        f"SELECT last_pos, last_hash, (SELECT count(*) FROM {TABLE})"
        f" FROM {TABLE} ORDER BY last_pos DESC LIMIT 1"
    )
    return Prefix() if row is None else Prefix(int(row[0]), str(row[1]), int(row[2]))


def segment_records(source: AuditSource) -> list[SegmentRecord]:
    if not has_archive(source):
        return []
    rows = source.fetchall(f"SELECT {COLUMNS} FROM {TABLE} ORDER BY last_pos")
    return [SegmentRecord(*row) for row in rows]


def prefix_note(prefix: Prefix) -> str | None:
    """What a verification of the live log alone did not check."""
    if prefix.last_pos == 0:
        return None
    return (
        f"positions 1..{prefix.last_pos} are archived in {prefix.segments} segment(s), not"
        " checked; pass --archive DIR to verify them with the live log"
    )


def rows_in_prefix(source: AuditSource, prefix: Prefix) -> Problem | None:
    """A live row at an archived position was slipped in after its segment was cut."""
    if prefix.last_pos == 0:
        return None
    row = source.fetchone(
        "SELECT min(pos) FROM events WHERE pos BETWEEN 1 AND ?", (prefix.last_pos,)
    )
    if row is None or row[0] is None:
        return None
    return Problem(
        INSERTED,
        int(row[0]),
        f"pos {row[0]} is in the live log, but positions 1..{prefix.last_pos} were archived:"
        " the row was inserted after archiving",
    )


def check_records(source: AuditSource, prefix: Prefix) -> Problem | None:
    """Each segment record must match the chained `archive.segment` event that recorded it
    (when that event is still live): a record forged to excuse deleted rows has none."""
    for record in segment_records(source):
        if record.event_pos <= prefix.last_pos:
            continue  # the event is archived itself; `--archive` checks the segments
        row = source.fetchone("SELECT type, data FROM events WHERE pos = ?", (record.event_pos,))
        try:
            data = json.loads(row[1]) if row is not None and row[0] == SEGMENT_EVENT else {}
        except (TypeError, ValueError):
            data = {}
        if not isinstance(data, dict) or (
            data.get("segment"),
            data.get("manifest_sha256"),
            data.get("last_hash"),
        ) != (record.segment, record.manifest_sha256, record.last_hash):
            return Problem(
                ANCHOR,
                record.first_pos,
                f"the record of segment {record.segment} does not match the archive.segment"
                f" event at pos {record.event_pos}: the archive records were altered",
            )
    return None


def anchor_archived(anchor: Anchor, records: list[SegmentRecord]) -> Problem | None:
    """The anchored row is no longer live because a segment holds it: say so, and how to
    check it, rather than pass the anchor unchecked or call the log cut short."""
    for record in records:
        if record.first_pos <= anchor.pos <= record.last_pos:
            return Problem(
                ANCHOR,
                anchor.pos,
                f"the anchored row at pos {anchor.pos} is archived (in {record.segment}): check"
                " it with --archive DIR (the directory holding the segments)",
            )
    return None


def anchor_in_segments(
    directory: Path, records: list[SegmentRecord], anchor: Anchor
) -> Problem | None:
    """Check an anchor whose row is archived against the segment holding it. A segment
    that is missing or unreadable is left to `check_segments`, which names it."""
    for record in records:
        if record.first_pos <= anchor.pos <= record.last_pos:
            try:
                for row in read_rows(directory / record.segment):
                    if row[0] == anchor.pos:
                        if row[10] == anchor.hash:
                            return None
                        return Problem(
                            ANCHOR,
                            anchor.pos,
                            f"the anchored row at pos {anchor.pos} (archived in"
                            f" {record.segment}) has hash {row[10]}, the anchor says"
                            f" {anchor.hash}: the log up to that point was rewritten",
                        )
            except (ArchiveError, OSError):
                return None
            return None
    return None


@dataclass(frozen=True, slots=True)
class ArchiveHook:
    """The archive's checks, run by `storage.audit.verify` (an `AuditHook`)."""

    prefix: Prefix
    archived: bool
    """Whether the log has the archive's tables (a schema from before has none)."""
    directory: Path | None = None
    """The segments' directory (`--archive DIR`): an archived anchor is checked in them."""

    @classmethod
    def read(cls, source: AuditSource, directory: Path | None = None) -> ArchiveHook:
        """The hook for the log `source` reads (inside the verification's snapshot)."""
        archived = has_archive(source)
        return cls(archived_prefix(source) if archived else Prefix(), archived, directory)

    @property
    def note(self) -> str | None:
        return prefix_note(self.prefix)

    def live_runs(self) -> str:
        return "archived_segment IS NULL" if self.archived else ""

    def broken(self, source: AuditSource) -> Problem | None:
        return rows_in_prefix(source, self.prefix)

    def problems(self, source: AuditSource) -> list[Problem]:
        if not self.archived:
            return []
        problem = check_records(source, self.prefix)
        return [] if problem is None else [problem]

    def anchor(self, source: AuditSource, anchor: Anchor) -> Problem | None:
        """An anchored row that is not live: archived, it is named (and how to check it),
        or with `--archive DIR` checked against its segment; otherwise None (a gap the
        chain scan reports)."""
        if not self.archived or anchor.pos > self.prefix.last_pos:
            return None
        records = segment_records(source)
        if self.directory is None:
            return anchor_archived(anchor, records)
        return anchor_in_segments(self.directory, records, anchor)


def archived_run(url: str, run_id: str) -> SegmentRecord | None:
    """The segment holding `run_id`'s events (for `steplog runs show`), read-only."""
    from storage.audit import open_source

    source = open_source(url)
    try:
        if "\x00" in run_id or not has_archive(source):
            return None
        row = source.fetchone(
            f"SELECT {COLUMNS} FROM {TABLE} WHERE segment ="
            " (SELECT archived_segment FROM runs WHERE id = ?)",
            (run_id,),
        )
    finally:
        source.close()
    return None if row is None else SegmentRecord(*row)
