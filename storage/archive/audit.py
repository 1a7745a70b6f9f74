"""`steplog audit verify --archive DIR`: the segments and the live log, as one chain.

The segments are checked first, in position order, against the records the
live log keeps (`archive_segments`); then the live log from where the last
segment ends (its first row must link to that segment's last hash, which is
the anchor the live scan starts from). One report covers both.
"""

from __future__ import annotations

from pathlib import Path

from storage.archive.audit_hook import segment_records
from storage.archive.records import SegmentRecord
from storage.archive.segment import ArchiveError, read_rows
from storage.archive.verify import check_segments
from storage.audit_model import ANCHOR, Anchor, Problem, Report


def merge(report: Report, records: list[SegmentRecord], directory: Path) -> Report:
    """Add the verdict over the segments in `directory` to the live log's `report`."""
    checked = check_segments(directory, records)
    report.events += checked.events
    report.add(checked.problem)
    report.elapsed_s += checked.elapsed_s
    if not records:
        report.note = f"nothing is archived; {directory} was not needed"
    elif checked.problem is None:
        report.note = (
            f"positions 1..{checked.last_pos} verified in {checked.segments} segment(s) in"
            f" {directory}, then the live log from pos {checked.last_pos + 1}"
        )
    else:
        failed = checked.segments + 1
        report.note = f"the archive in {directory} stopped verifying at segment {failed}"
    return report


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


def live_anchor(anchor: Anchor | None, records: list[SegmentRecord]) -> Anchor | None:
    """The anchor the live log's verification checks: none when a segment holds its row
    (then `anchor_in_segments` checks it)."""
    if anchor is None or not records or anchor.pos > records[-1].last_pos or anchor.pos == 0:
        return anchor
    return None


def verify_sqlite_with_archive(path: Path, directory: Path, anchor: Anchor | None) -> Report:
    from storage.audit import open_readonly, verify_db

    conn = open_readonly(path)
    try:
        before = segment_records(conn)
    finally:
        conn.close()
    report = verify_db(path, live_anchor(anchor, before))
    # Read after the live snapshot: an archiving in between only makes the segments
    # checked overlap the live rows checked, never leaves a hole between them.
    conn = open_readonly(path)
    try:
        records = segment_records(conn)
    finally:
        conn.close()
    report = merge(report, records, directory)
    if anchor is not None and live_anchor(anchor, before) is None:
        report.add(anchor_in_segments(directory, records, anchor))
    return report


def verify_with_archive(db: str, directory: Path, anchor: Anchor | None) -> Report:
    """`audit verify --archive DIR` for the log `db` names (SQLite path or PostgreSQL URL)."""
    if db.startswith(("postgres://", "postgresql://")):
        from storage.postgres.archive import verify_url_with_archive

        return verify_url_with_archive(db, directory, anchor)
    from storage.audit import db_path

    return verify_sqlite_with_archive(db_path(db), directory, anchor)
