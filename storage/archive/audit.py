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
from storage.archive.verify import check_segments
from storage.audit_model import Anchor, Report


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


def verify_sqlite_with_archive(path: Path, directory: Path, anchor: Anchor | None) -> Report:
    from storage.audit import open_readonly, verify_db

    report = verify_db(path, anchor)
    # Read after the live snapshot: an archiving in between only makes the segments
    # checked overlap the live rows checked, never leaves a hole between them.
    conn = open_readonly(path)
    try:
        records = segment_records(conn)
    finally:
        conn.close()
    return merge(report, records, directory)


def verify_with_archive(db: str, directory: Path, anchor: Anchor | None) -> Report:
    """`audit verify --archive DIR` for the log `db` names (SQLite path or PostgreSQL URL)."""
    if db.startswith(("postgres://", "postgresql://")):
        from storage.postgres.archive import verify_url_with_archive

        return verify_url_with_archive(db, directory, anchor)
    from storage.audit import db_path

    return verify_sqlite_with_archive(db_path(db), directory, anchor)
