"""Positions, per-run `seq` runs and run records, checked by SQL over the indexes.

The chain scan only hashes; everything that needs to know which run a row
belongs to is answered here, where SQLite does the per-row work in C over the
`(run_id, seq)` index and Python only sees one row per run. That keeps the
scan fast and the memory flat however many runs the log holds (three ordered
streams, one row per run each, merged in step).

What a broken `seq` run means: a run's events are not exactly 1, 2, 3… (a
gap), do not follow `pos` order, or go on after the run's terminal event. With
an intact hash chain this can only happen if the chain itself was recomputed
after rows were deleted or moved, which is exactly what these checks catch.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from storage.archive.audit_hook import live_runs_query
from storage.audit_chain import TERMINAL_TYPES, position_problem
from storage.audit_model import INSERTED, RECORDS, SEQ, Problem

MAX_RECORD_PROBLEMS = 5
"""Run-record disagreements listed in one report (the rest are counted)."""

_FINISHED = frozenset({"succeeded", "failed", "cancelled"})
_TERMINAL_SQL = ", ".join(f"'{t}'" for t in sorted(TERMINAL_TYPES))


def below_one(conn: sqlite3.Connection) -> Problem | None:
    """A row at pos 0 or below was never written by steplog (positions start at 1)."""
    below = conn.execute("SELECT min(pos) FROM events WHERE pos < 1").fetchone()[0]
    if below is None:
        return None
    return Problem(INSERTED, below, f"pos {below} is not one steplog writes (they start at 1)")


def first_gap(conn: sqlite3.Connection, upto: int, after: int = 0) -> Problem | None:
    """The first missing position in `after + 1`..`upto`, as a problem; None when there is
    none. (`after` is the archived prefix: positions up to it are in segments.)

    Positions start at 1 and AUTOINCREMENT never reuses one, so a gap means rows
    were deleted. Only asked when something is already wrong (a link broke, or
    the row count differs from the highest pos), so its full scan costs nothing
    on a healthy log.
    """
    present = conn.execute(
        "SELECT count(*) FROM events WHERE pos BETWEEN ? AND ?", (after + 1, upto)
    ).fetchone()[0]
    if present == upto - after:
        return None
    if conn.execute("SELECT 1 FROM events WHERE pos = ?", (after + 1,)).fetchone() is None:
        gap = after + 1
    else:
        gap = conn.execute(
            "SELECT e.pos + 1 FROM events e WHERE e.pos > ? AND NOT EXISTS"
            " (SELECT 1 FROM events n WHERE n.pos = e.pos + 1) ORDER BY e.pos LIMIT 1",
            (after,),
        ).fetchone()[0]
    after = conn.execute("SELECT min(pos) FROM events WHERE pos > ?", (gap,)).fetchone()[0]
    return position_problem(gap - 1, after)


@dataclass(slots=True)
class RunChecks:
    """The first broken `seq` run (by position) and the run-record disagreements."""

    seq: Problem | None = None
    records: list[Problem] = field(default_factory=list)

    def found_seq(self, problem: Problem) -> None:
        if problem.pos is None:
            return
        if self.seq is None or self.seq.pos is None or problem.pos < self.seq.pos:
            self.seq = problem


def check_runs(conn: sqlite3.Connection) -> RunChecks:
    """Every run's `seq` run, and every run record against the log."""
    checks = RunChecks()
    records: list[str] = []
    for run_id, stats, terminals, record in _merged(conn):
        if stats is not None:
            count, lowest, highest = stats
            if count != highest or lowest != 1:
                checks.found_seq(_locate_gap(conn, run_id))
            if terminals and terminals[0][0] != highest:
                checks.found_seq(_after_terminal(conn, run_id, terminals[0][0]))
        records.extend(_record_problems(conn, run_id, stats, terminals, record))
    order = conn.execute(
        "SELECT f.pos, f.run_id, f.seq, e.pos FROM events e"
        " JOIN events f ON f.run_id = e.run_id AND f.seq = e.seq + 1"
        " WHERE f.pos < e.pos ORDER BY f.pos LIMIT 1"
    ).fetchone()
    if order is not None:
        pos, run_id, seq, later = order
        checks.found_seq(
            Problem(
                SEQ,
                pos,
                f"run {run_id} has seq {seq} at pos {pos}, before its seq {seq - 1} at pos"
                f" {later}: the run's events are out of order",
            )
        )
    shown = records[:MAX_RECORD_PROBLEMS]
    if len(records) > MAX_RECORD_PROBLEMS:
        shown.append(f"and {len(records) - MAX_RECORD_PROBLEMS} more disagreements")
    checks.records = [Problem(RECORDS, None, detail) for detail in shown]
    return checks


def _record_problems(
    conn: sqlite3.Connection,
    run_id: Any,
    stats: tuple[int, int, int] | None,
    terminals: list[tuple[int, int]],
    record: tuple[int, str] | None,
) -> list[str]:
    """How a run record disagrees with its events (they are written in one transaction)."""
    if record is None:
        first = conn.execute("SELECT min(pos) FROM events WHERE run_id = ?", (run_id,)).fetchone()
        return [f"pos {first[0]} starts events of run {run_id!r}, which has no record"]
    last_seq, status = record
    if stats is None:
        return [f"run {run_id}'s record counts {last_seq} events, the log holds none"]
    if stats[2] != last_seq:
        return [f"run {run_id}'s record counts {last_seq} events, the log holds {stats[2]}"]
    if bool(terminals) != (status in _FINISHED):
        ended = "has a terminal event" if terminals else "has no terminal event"
        return [f"run {run_id} is {status} in its record, but its log {ended}"]
    return []


def _locate_gap(conn: sqlite3.Connection, run_id: Any) -> Problem:
    """The first row of `run_id` whose seq is not the next one (the run is known broken)."""
    expected = 1
    for seq, pos in conn.execute(
        "SELECT seq, pos FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
    ):
        if seq != expected:
            if expected == 1:
                detail = f"run {run_id} starts at seq {seq}: seq 1 to {seq - 1} are missing"
            else:
                missing = f"seq {expected}" + (f" to {seq - 1}" if seq > expected + 1 else "")
                detail = (
                    f"run {run_id} jumps from seq {expected - 1} to seq {seq}: {missing}"
                    " of this run missing"
                )
            return Problem(SEQ, pos, detail)
        expected += 1
    return Problem(SEQ, None, f"run {run_id}'s seq run is broken")  # pragma: no cover


def _after_terminal(conn: sqlite3.Connection, run_id: Any, ended_at: int) -> Problem:
    row = conn.execute(
        "SELECT pos, seq FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT 1",
        (run_id, ended_at),
    ).fetchone()
    return Problem(
        SEQ,
        row[0],
        f"run {run_id} ended at seq {ended_at} with its terminal event, yet pos {row[0]}"
        f" continues it with seq {row[1]}",
    )


Stats = tuple[int, int, int]
Merged = tuple[Any, Stats | None, list[tuple[int, int]], tuple[int, str] | None]


def _merged(conn: sqlite3.Connection) -> Iterator[Merged]:
    """Per run id, in order: (count, min seq, max seq), its terminal events, its record.

    Three queries sorted by run id, walked in step: one row per run in memory.
    The two over `events` use the `(run_id, seq)` index or one plain scan.
    """
    stats = _Peek(
        conn.execute(
            "SELECT run_id, count(*), min(seq), max(seq) FROM events GROUP BY run_id"
            " ORDER BY run_id"
        )
    )
    ends = _Peek(
        conn.execute(
            f"SELECT run_id, seq, pos FROM events NOT INDEXED WHERE type IN ({_TERMINAL_SQL})"
            " ORDER BY run_id, seq"
        )
    )
    records = _Peek(conn.execute(live_runs_query(conn)))  # archived runs have no live events
    while True:
        heads = [row[0] for row in (stats.head, ends.head, records.head) if row is not None]
        if not heads:
            return
        run_id = min(heads, key=_order)
        key = _order(run_id)
        found = stats.take(key)
        terminals = []
        while (row := ends.take(key)) is not None:
            terminals.append((row[1], row[2]))
        record = records.take(key)
        yield (
            run_id,
            None if found is None else (found[1], found[2], found[3]),
            terminals,
            None if record is None else (record[1], record[2]),
        )


def _order(value: Any) -> tuple[int, Any]:
    """SQLite's ordering of values (numbers, then text, then blobs) as a Python key."""
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    if value is None:
        return (0, 0)
    return (3, bytes(value))


class _Peek:
    """A cursor with one row of look-ahead, taken only when its key matches."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self.cursor = cursor
        self.head: Any = cursor.fetchone()

    def take(self, key: tuple[int, Any]) -> Any:
        if self.head is None or _order(self.head[0]) != key:
            return None
        row, self.head = self.head, self.cursor.fetchone()
        return row
