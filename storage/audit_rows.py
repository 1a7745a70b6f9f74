"""Rows for the chain scan, read from SQLite with the canonical text built in C.

SQLite's `json_array` writes exactly the text `storage.chain.canonical_row`
does for the values steplog stores (compact, UTF-8 unescaped, the same escapes
for control characters; a unit test pins this on real rows), and costs a
fraction of encoding in Python after decoding eleven columns into objects.
Two cases are left to Python so that SQLite never decides a verdict:

- `printf('%.2f')` rounds exact ties (0.125) away from zero where Python
  rounds them to even; steplog never stores such a `pct` (it stores values
  already rounded to two decimals), so such rows get an empty fast text, fail
  the fast check, and are checked exactly in Python;
- `json_array` refuses BLOB values, which steplog never writes; if a tampered
  row holds one, the source carries on from that row with full rows encoded in
  Python, and the scan reports the row as changed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from storage.audit_chain import FastRow, Row, fast_row
from storage.audit_model import Problem
from storage.audit_runs import first_gap
from storage.sqlite.rows import EVENT_COLUMNS

FAST_TEXT = (
    "CASE WHEN pct IS NOT NULL AND pct * 200 = round(pct * 200) AND pct * 100 != round(pct * 100)"
    " THEN X''"  # a rounding tie: no fast text, so Python checks the row exactly
    " ELSE CAST(json_array('steplog.v1', pos, run_id, seq, type, step, message,"
    " CASE WHEN pct IS NULL THEN NULL ELSE printf('%.2f', pct) END,"
    " data, attempt, at) AS BLOB) END"
)


class DatabaseRows:
    """The rows of `events` from pos 1 on, in one read snapshot.

    Rows come without their `pos` (one column less to decode per row): the scan
    counts them, and only when a link breaks, or the count differs from the
    highest pos, is the count compared with the positions (`first_gap`).
    """

    def __init__(self, conn: sqlite3.Connection, batch: int, after: int = 0) -> None:
        self.conn = conn
        self.batch = batch
        self.after = after
        """Rows from pos `after + 1` on (past the archived prefix, see storage/archive/)."""

    def batches(self) -> Iterator[list[FastRow]]:
        done = 0  # rows handed out so far
        try:
            cursor = self.conn.execute(
                f"SELECT {FAST_TEXT}, hash FROM events WHERE pos > ? ORDER BY pos", (self.after,)
            )
            while rows := cursor.fetchmany(self.batch):
                yield rows
                done += len(rows)
        except sqlite3.OperationalError as exc:
            if "JSON" not in str(exc):
                raise
        else:
            return
        # A value SQLite cannot put in JSON (a BLOB): carry on with Python doing the encoding.
        cursor = self.conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE pos > ? ORDER BY pos LIMIT -1 OFFSET ?",
            (self.after, done),
        )
        while full := cursor.fetchmany(self.batch):
            yield [fast_row(row) for row in full]

    def first_gap(self, upto: int) -> Problem | None:
        return first_gap(self.conn, upto, self.after)

    def full_rows(self, from_pos: int, limit: int) -> list[Row]:
        return self.conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE pos >= ? ORDER BY pos LIMIT ?",
            (from_pos, limit),
        ).fetchall()
