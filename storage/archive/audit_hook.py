"""What the SQLite audit asks about the archive: where the live log starts, and which
run records describe archived runs (their events are in segments, not in `events`).

Kept here, not in the audit, so the audit changes by one call per question and
reads a log from before archiving (no `archive_segments` table) exactly as before.
"""

from __future__ import annotations

import sqlite3

from storage.archive.records import COLUMNS, Prefix, SegmentRecord
from storage.audit_model import ANCHOR, INSERTED, Anchor, Problem


def has_archive(conn: sqlite3.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'archive_segments'"
    ).fetchone()
    return row is not None


def archived_prefix(conn: sqlite3.Connection) -> Prefix:
    """The recorded archived prefix; nothing archived on a log without the table."""
    if not has_archive(conn):
        return Prefix()
    row = conn.execute(
        "SELECT last_pos, last_hash, (SELECT count(*) FROM archive_segments)"
        " FROM archive_segments ORDER BY last_pos DESC LIMIT 1"
    ).fetchone()
    return Prefix() if row is None else Prefix(int(row[0]), str(row[1]), int(row[2]))


def segment_records(conn: sqlite3.Connection) -> list[SegmentRecord]:
    if not has_archive(conn):
        return []
    rows = conn.execute(f"SELECT {COLUMNS} FROM archive_segments ORDER BY last_pos").fetchall()
    return [SegmentRecord(*row) for row in rows]


def live_runs_query(conn: sqlite3.Connection) -> str:
    """The run records the audit compares with `events`: those not archived."""
    where = " WHERE archived_segment IS NULL" if has_archive(conn) else ""
    return f"SELECT id, last_seq, status FROM runs{where} ORDER BY id"


def prefix_note(prefix: Prefix) -> str | None:
    """What a verification of the live log alone did not check."""
    if prefix.last_pos == 0:
        return None
    return (
        f"positions 1..{prefix.last_pos} are archived in {prefix.segments} segment(s), not"
        " checked; pass --archive DIR to verify them with the live log"
    )


def rows_in_prefix(conn: sqlite3.Connection, prefix: Prefix) -> Problem | None:
    """A live row at an archived position was slipped in after its segment was cut."""
    if prefix.last_pos == 0:
        return None
    row = conn.execute(
        "SELECT min(pos) FROM events WHERE pos BETWEEN 1 AND ?", (prefix.last_pos,)
    ).fetchone()
    if row[0] is None:
        return None
    return Problem(
        INSERTED,
        int(row[0]),
        f"pos {row[0]} is in the live log, but positions 1..{prefix.last_pos} were archived:"
        " the row was inserted after archiving",
    )


def check_records(conn: sqlite3.Connection, prefix: Prefix) -> Problem | None:
    """Each segment record must match the chained `archive.segment` event that recorded it
    (when that event is still live): a record forged to excuse deleted rows has none."""
    import json

    for record in segment_records(conn):
        if record.event_pos <= prefix.last_pos:
            continue  # the event is archived itself; `--archive` checks the segments
        row = conn.execute(
            "SELECT type, data FROM events WHERE pos = ?", (record.event_pos,)
        ).fetchone()
        try:
            data = json.loads(row[1]) if row is not None and row[0] == "archive.segment" else {}
        except ValueError:
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


def archived_anchor(conn: sqlite3.Connection, anchor: Anchor) -> Problem | None:
    """`anchor_archived` on an SQLite log (None when its row is not archived)."""
    return anchor_archived(anchor, segment_records(conn))


def archived_run(path: object, run_id: str) -> SegmentRecord | None:
    """The segment holding `run_id`'s events (for `steplog runs show`), read-only."""
    from storage.audit import open_readonly

    conn = open_readonly(path)  # type: ignore[arg-type]
    try:
        if not has_archive(conn):
            return None
        row = conn.execute(
            f"SELECT {COLUMNS} FROM archive_segments WHERE segment ="
            " (SELECT archived_segment FROM runs WHERE id = ?)",
            (run_id,),
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else SegmentRecord(*row)
