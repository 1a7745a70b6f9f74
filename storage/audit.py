"""Audit an SQLite event log: verify the hash chain, take anchors, name what is wrong.

The audit only ever reads. It opens the file with SQLite's `mode=ro` URI (the
library itself refuses any write) plus `PRAGMA query_only`, and does all of one
verification inside a single read snapshot, so it checks one consistent state
even while `serve` keeps appending: in WAL mode a reader never blocks the
writer, and the writer never changes what the reader sees. (While a
verification runs, a checkpoint cannot move past its snapshot, so the WAL may
grow for those few seconds; it is reclaimed afterwards.)

It is a batch reader, so it uses the stdlib `sqlite3` directly (run it in a
thread from async code) and reads `fetchmany` batches of plain tuples.

What it checks, in one pass plus a few SQL aggregates over the indexes:
- every row's hash against the previous row's (`storage.chain`), and `pos`
  contiguous from 1: see `storage.audit_chain` for how a broken link is named;
- each run's `seq` is 1, 2, 3… in `pos` order, and nothing follows its
  terminal event (`storage.audit_runs`);
- `sqlite_sequence` (the AUTOINCREMENT high-water mark) is not above the head,
  which would mean rows were cut off the end;
- the run records agree with the log (event count, ended or not);
- both append-only triggers exist exactly as the schema defines them;
- with an anchor: the anchored row still exists with the anchored hash.
"""

from __future__ import annotations

import re
import sqlite3
import time
import urllib.parse
from pathlib import Path

from storage import audit_runs, chain
from storage.archive.audit_hook import (
    archived_anchor,
    archived_prefix,
    check_records,
    prefix_note,
    rows_in_prefix,
)
from storage.audit_chain import ChainScan
from storage.audit_model import (
    ANCHOR,
    TRIGGERS,
    TRUNCATED,
    Anchor,
    AuditError,
    Problem,
    Report,
)
from storage.audit_rows import DatabaseRows

__all__ = [
    "Anchor",
    "AuditError",
    "Problem",
    "Report",
    "db_path",
    "head_anchor",
    "open_readonly",
    "verify_db",
]

BATCH = 5000
"""Rows per `fetchmany`: big enough to amortise the call, small enough for memory."""

TRIGGER_NAMES = ("events_no_update", "events_no_delete")


def db_path(url: str) -> Path:
    """The SQLite file a `--db` / `STEPLOG_DB` value names (as `storage.open_log` reads it)."""
    if url.startswith(("postgres://", "postgresql://")):
        raise AuditError(
            "the audit reads SQLite logs; for PostgreSQL, copy the log into SQLite first"
            " or verify it with the chain rules in the README"
        )
    return Path(url.removeprefix("sqlite://") if url.startswith("sqlite://") else url)


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
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as exc:
        raise AuditError(f"{file} is not a readable SQLite database: {exc}") from None
    if not {"events", "runs"} <= tables:
        conn.close()
        raise AuditError(f"{file} is not a steplog log (it has no events and runs tables)")
    return conn


def stored_secret(path: str | Path, name: str) -> bytes | None:
    """The log's secret `name` (the run-token key: `steplog runs show` mints a link with
    it), read-only; None when no server ever created it."""
    conn = open_readonly(path)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (f"secret:{name}",)).fetchone()
    except sqlite3.OperationalError:  # a log from before the meta table
        return None
    finally:
        conn.close()
    return None if row is None else bytes(row[0])


def head_anchor(path: str | Path) -> Anchor:
    """The current head as an anchor (pos 0 and the genesis hash for an empty log)."""
    conn = open_readonly(path)
    try:
        row = conn.execute("SELECT pos, hash FROM events ORDER BY pos DESC LIMIT 1").fetchone()
    finally:
        conn.close()
    return Anchor(0, chain.GENESIS_HASH) if row is None else Anchor(int(row[0]), str(row[1]))


def verify_db(path: str | Path, anchor: Anchor | None = None, *, batch: int = BATCH) -> Report:
    """Verify the log at `path` in one read snapshot; never writes.

    The report lists the first broken position (of the chain, the positions or
    a `seq` run: nothing after it can be trusted, so nothing after it is
    reported), plus what is wrong regardless of position: the triggers, the
    end of the log (AUTOINCREMENT, anchor), and the run records.
    """
    started = time.perf_counter()
    conn = open_readonly(path)
    report = Report(source=str(path))
    try:
        conn.execute("BEGIN")  # one read transaction: every query sees the same snapshot
        report.add(check_triggers(conn))
        max_pos = _head(conn)[0]
        prefix = archived_prefix(conn)  # positions 1..prefix.last_pos are in segments
        report.note = prefix_note(prefix)
        scan = ChainScan(prefix.last_pos, prefix.last_hash)
        broken = scan.run(DatabaseRows(conn, batch, prefix.last_pos))
        if broken is None and scan.head_pos != max_pos:  # rows linked across a gap
            broken = audit_runs.first_gap(conn, max_pos, prefix.last_pos)
            end = prefix.last_pos if broken is None or broken.pos is None else broken.pos - 1
            scan.events = end - prefix.last_pos
            scan.head_hash = _hash_at(conn, end) if end > prefix.last_pos else prefix.last_hash
        runs = audit_runs.check_runs(conn)
        report.events, report.head_pos, report.head_hash = (
            scan.events,
            scan.head_pos,
            scan.head_hash,
        )
        below = audit_runs.below_one(conn) or rows_in_prefix(conn, prefix)
        first = [p for p in (broken, below) if p is not None]
        if runs.seq is not None and all(_before(runs.seq, p) for p in first):
            first.append(runs.seq)
        if first:
            report.add(min(first, key=lambda p: p.pos if p.pos is not None else 0))
        report.add(check_sequence(conn, max_pos))
        report.add(check_records(conn, prefix))
        if anchor is not None:
            report.add(check_anchor(conn, anchor, max_pos))
        if not first:
            for problem in runs.records:
                report.add(problem)
        conn.execute("COMMIT")
    finally:
        conn.close()
    report.elapsed_s = time.perf_counter() - started
    return report


def _head(conn: sqlite3.Connection) -> tuple[int, str]:
    """(highest pos, its hash) of the rows at pos 1 and above."""
    row = conn.execute(
        "SELECT pos, hash FROM events WHERE pos >= 1 ORDER BY pos DESC LIMIT 1"
    ).fetchone()
    return (0, chain.GENESIS_HASH) if row is None else (int(row[0]), str(row[1]))


def _hash_at(conn: sqlite3.Connection, pos: int) -> str:
    row = conn.execute("SELECT hash FROM events WHERE pos = ?", (pos,)).fetchone()
    return chain.GENESIS_HASH if row is None else str(row[0])


def _before(problem: Problem, other: Problem) -> bool:
    return problem.pos is not None and (other.pos is None or problem.pos < other.pos)


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


def check_triggers(conn: sqlite3.Connection) -> Problem | None:
    """Both append-only triggers exist on `events`, word for word as the schema has them."""
    present = {
        name: (table, sql or "")
        for name, table, sql in conn.execute(
            "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'"
        )
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


def check_sequence(conn: sqlite3.Connection, max_pos: int) -> Problem | None:
    """Rows cut off the end still leave AUTOINCREMENT's high-water mark behind."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    assigned = int(row[0]) if row else 0
    if assigned <= max_pos:
        return None
    gone = assigned - max_pos
    return Problem(
        TRUNCATED,
        max_pos + 1,
        f"pos {max_pos + 1}{f' to {assigned}' if gone > 1 else ''} {'were' if gone > 1 else 'was'}"
        f" written (AUTOINCREMENT reached {assigned}) but the log ends at pos {max_pos}:"
        f" {gone} row{'s were' if gone > 1 else ' was'} cut off the end",
    )


def check_anchor(conn: sqlite3.Connection, anchor: Anchor, max_pos: int) -> Problem | None:
    """The anchored row must still exist, with the anchored hash."""
    if anchor.pos == 0:
        return None
    if anchor.pos > max_pos:
        return Problem(
            TRUNCATED,
            max_pos + 1,
            f"the anchor says the log reached pos {anchor.pos}, but it ends at pos {max_pos}:"
            f" at least {anchor.pos - max_pos} row(s) were cut off the end",
        )
    row = conn.execute("SELECT hash FROM events WHERE pos = ?", (anchor.pos,)).fetchone()
    if row is None:  # archived (storage/archive/), or a gap the chain scan reports
        return archived_anchor(conn, anchor)
    if row[0] != anchor.hash:
        return Problem(
            ANCHOR,
            anchor.pos,
            f"the row at the anchored pos {anchor.pos} has hash {row[0]}, the anchor says"
            f" {anchor.hash}: the log up to that point was rewritten",
        )
    return None
