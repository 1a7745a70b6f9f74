"""The audit of an archived log: the live log from the archived prefix, and with
`steplog audit verify --archive DIR` the segments and the live log as one chain.

`verify_live` is how every verification of a log runs (`storage.audit.verify_log`
calls it): the audit's own `verify` from the archived prefix on, with the
archive's checks as a hook (storage/archive/audit_hook.py), on either backend.
With `--archive DIR`, the segments are checked first, in position order, against the records the
live log keeps (`archive_segments`); then the live log from where the last
segment ends (its first row must link to that segment's last hash, which is
the anchor the live scan starts from). One report covers both.
"""

from __future__ import annotations

from pathlib import Path

from storage.archive.audit_hook import ArchiveHook, segment_records
from storage.archive.records import SegmentRecord
from storage.archive.verify import check_segments
from storage.audit import open_source, verify
from storage.audit.model import Anchor, Report
from storage.audit.source import AuditSource
from storage.audit.verify import BATCH


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


def verify_live(
    source: AuditSource,
    anchor: Anchor | None = None,
    *,
    directory: Path | None = None,
    batch: int = BATCH,
) -> Report:
    """Verify the live log `source` reads, from the archived prefix on (on every backend).

    The prefix is read inside the verification's snapshot, so the scan starts exactly
    where the recorded segments end; the archive's own checks run as a hook. An anchor
    whose row is archived is named as such, or with the segments' `directory` checked
    against the segment holding it.
    """
    with source.snapshot():
        hook = ArchiveHook.read(source, directory)
        prefix = hook.prefix
        return verify(
            source,
            anchor,
            start_pos=prefix.last_pos + 1,
            prev_hash=prefix.last_hash,
            hooks=(hook,),
            batch=batch,
        )


def verify_with_archive(db: str, directory: Path, anchor: Anchor | None) -> Report:
    """`audit verify --archive DIR` for the log `db` names (SQLite path or PostgreSQL URL):
    the live log and the records of its segments from one snapshot, then the segments."""
    source = open_source(db)
    try:
        with source.snapshot():
            report = verify_live(source, anchor, directory=directory)
            records = segment_records(source)
    finally:
        source.close()
    return merge(report, records, directory)
