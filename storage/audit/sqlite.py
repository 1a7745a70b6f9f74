"""The audit's row-source for SQLite: the file opened read-only, SQLite building the text.

The audit only ever reads. It opens the file with SQLite's `mode=ro` URI (the
library itself refuses any write) plus `PRAGMA query_only`, and does all of one
verification inside a single read snapshot, so it checks one consistent state
even while `serve` keeps appending: in WAL mode a reader never blocks the
writer, and the writer never changes what the reader sees. (While a
verification runs, a checkpoint cannot move past its snapshot, so the WAL may
grow for those few seconds; it is reclaimed afterwards.) It is a batch reader,
so it uses the stdlib `sqlite3` directly (run it in a thread from async code)
and reads `fetchmany` batches of plain tuples.

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

import contextlib
import re
import sqlite3
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from storage.audit.model import TRIGGERS, AuditError, Problem
from storage.audit.scan import fast_row
from storage.audit.source import FastRow
from storage.sqlfiles import SQLITE as Q

TRIGGER_NAMES = ("events_no_update", "events_no_delete")


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """A connection SQLite itself forbids to write (`mode=ro`), in autocommit mode.

    `check_same_thread=False` because async callers hand it to worker threads;
    it is still used by one thread at a time.
    """
    file = Path(path)
    if not file.is_file():
        raise AuditError(f"no SQLite log at {file}")
    uri = f"file:{urllib.parse.quote(str(file.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
        conn.execute("PRAGMA busy_timeout = 10000")
        tables = {row[0] for row in conn.execute(Q["table_names"])}
    except sqlite3.DatabaseError as exc:
        raise AuditError(f"{file} is not a readable SQLite database: {exc}") from None
    if not {"events", "runs"} <= tables:
        conn.close()
        raise AuditError(f"{file} is not a steplog log (it has no events and runs tables)")
    return conn


class SQLiteSource:
    """A SQLite log file, read-only (see the module docstring)."""

    run_order = ""  # SQLite compares text by code point already
    scan_hint = " NOT INDEXED"  # the terminal events: one plain scan beats the type lookup
    builds_json = True

    def __init__(self, path: str | Path) -> None:
        self.label = str(path)
        self.conn = open_readonly(path)
        self._depth = 0

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction (every query sees the same snapshot); a nested call joins
        the one already open."""
        if self._depth == 0:
            self.conn.execute(Q["begin_read"])
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.conn.execute(Q["commit"])

    def has_table(self, name: str) -> bool:
        row = self.conn.execute(Q["has_table"], (name,)).fetchone()
        return row is not None

    def cursor(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, tuple(args))

    def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql, tuple(args)).fetchone()

    def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return self.conn.execute(sql, tuple(args)).fetchall()

    def fast_batches(self, start_pos: int, batch: int) -> Iterator[list[FastRow]]:
        """Rows come without their `pos` (one column less to decode per row): the scan
        counts them, and only when a link breaks, or the count differs from the highest
        pos, is the count compared with the positions (`storage.audit.scan.first_gap`)."""
        done = 0  # rows handed out so far
        try:
            cursor = self.conn.execute(Q["audit_fast_rows"], (start_pos,))
            while rows := cursor.fetchmany(batch):
                yield rows
                done += len(rows)
        except sqlite3.OperationalError as exc:
            if "JSON" not in str(exc):
                raise
        else:
            return
        # A value SQLite cannot put in JSON (a BLOB): carry on with Python doing the encoding.
        cursor = self.conn.execute(Q["audit_full_rows"], (start_pos, done))
        while full := cursor.fetchmany(batch):
            yield [fast_row(row) for row in full]

    def check_triggers(self) -> Problem | None:
        """Both append-only triggers exist on `events`, word for word as the schema has them."""
        present = {
            name: (table, sql or "") for name, table, sql in self.conn.execute(Q["triggers"])
        }
        wrong = []
        for name, expected in _expected_triggers().items():
            verb = "UPDATE" if name.endswith("update") else "DELETE"
            if name not in present:
                wrong.append(f"{name} is missing ({verb} of events is no longer refused)")
            elif present[name][0] != "events" or _normalise(present[name][1]) != expected:
                wrong.append(f"{name} was altered (it may no longer refuse {verb})")
        if not wrong:
            return None
        return Problem(TRIGGERS, None, "append-only trigger " + "; ".join(wrong))

    def assigned_high(self) -> int | None:
        row = self.conn.execute(Q["assigned_high"]).fetchone()
        return int(row[0]) if row else 0

    def secret(self, name: str) -> bytes | None:
        try:
            row = self.fetchone(Q["get_secret"], (f"secret:{name}",))
        except sqlite3.OperationalError:  # a log from before the meta table
            return None
        return None if row is None else bytes(row[0])

    def close(self) -> None:
        self.conn.close()


def _expected_triggers() -> dict[str, str]:
    """The trigger statements exactly as the newest schema migration defining each has them
    (004_archive.sql redefines `events_no_delete` to let archived positions go)."""
    from storage.sqlite.migrations import available

    found = {}
    for _number, sql in available():
        for name in TRIGGER_NAMES:
            match = re.search(rf"CREATE TRIGGER {name}\b.*?\bEND;", sql, re.S)
            if match is not None:
                found[name] = _normalise(match.group(0))
    missing = set(TRIGGER_NAMES) - set(found)
    if missing:  # pragma: no cover - the schema files ship with the package
        raise AuditError(f"the schema no longer defines {sorted(missing)}")
    return found


def _normalise(sql: str) -> str:
    return " ".join(sql.rstrip().rstrip(";").split()).lower()
