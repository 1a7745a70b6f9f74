"""Positions, per-run `seq` runs and run records, checked by SQL over the indexes.

The chain scan only hashes; everything that needs to know which run a row
belongs to is answered here, where the database does the per-row work over the
`(run_id, seq)` index and Python only sees one row per run. That keeps the
scan fast and the memory flat however many runs the log holds (three ordered
streams, one row per run each, merged in step).

What a broken `seq` run means: a run's events are not exactly 1, 2, 3… (a
gap), do not follow `pos` order, or go on after the run's terminal event. With
an intact hash chain this can only happen if the chain itself was recomputed
after rows were deleted or moved, which is exactly what these checks catch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from storage.audit.model import INSERTED, RECORDS, SEQ, Problem
from storage.audit.scan import TERMINAL_TYPES
from storage.audit.source import AuditSource, RowCursor

MAX_RECORD_PROBLEMS = 5
"""Run-record disagreements listed in one report (the rest are counted)."""

_FINISHED = frozenset({"succeeded", "failed", "cancelled"})
_TERMINAL_SQL = ", ".join(f"'{t}'" for t in sorted(TERMINAL_TYPES))


def below_one(source: AuditSource) -> Problem | None:
    """A row at pos 0 or below was never written by steplog (positions start at 1)."""
    below = source.fetchone("SELECT min(pos) FROM events WHERE pos < 1")[0]
    if below is None:
        return None
    return Problem(INSERTED, below, f"pos {below} is not one steplog writes (they start at 1)")


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


def check_runs(source: AuditSource, start_pos: int = 1, live_runs: str = "") -> RunChecks:
    """Every run's `seq` run from `start_pos` on, and every run record against the log.

    Bounded like the chain scan: rows before `start_pos` are checked elsewhere. A run
    the range starts in the middle of must have its earlier events right before it,
    still in the log (rows are only ever moved out with their whole run, see
    storage/archive/); one whose first events are nowhere is missing them. Only the
    records `live_runs` selects (an SQL condition on `runs`; empty: all) are compared.
    """
    checks = RunChecks()
    records: list[str] = []
    for run_id, stats, terminals, record in _merged(source, start_pos, live_runs):
        first = 1
        if stats is not None:
            count, lowest, highest = stats
            if lowest != 1 and _continues(source, run_id, lowest, start_pos):
                first = lowest
            if count != highest - first + 1 or lowest != first:
                checks.found_seq(_locate_gap(source, run_id, first, start_pos))
            if terminals and terminals[0][0] != highest:
                checks.found_seq(_after_terminal(source, run_id, terminals[0][0]))
        elif start_pos > 1 and _has_rows_before(source, run_id, start_pos):
            continue  # a run wholly before the range: checked with what holds it
        records.extend(_record_problems(source, run_id, stats, terminals, record))
    bound = "" if start_pos <= 1 else " AND e.pos >= ? AND f.pos >= ?"
    order = source.fetchone(
        "SELECT f.pos, f.run_id, f.seq, e.pos FROM events e"
        " JOIN events f ON f.run_id = e.run_id AND f.seq = e.seq + 1"
        f" WHERE f.pos < e.pos{bound} ORDER BY f.pos LIMIT 1",
        () if start_pos <= 1 else (start_pos, start_pos),
    )
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


def _continues(source: AuditSource, run_id: Any, lowest: int, start_pos: int) -> bool:
    """Whether `run_id`'s events before seq `lowest` sit before `start_pos`, in the log."""
    if start_pos <= 1:
        return False
    row = source.fetchone(
        "SELECT count(*) FROM events WHERE run_id = ? AND seq < ? AND pos < ?",
        (run_id, lowest, start_pos),
    )
    return bool(row is not None and row[0] == lowest - 1)


def _has_rows_before(source: AuditSource, run_id: Any, start_pos: int) -> bool:
    row = source.fetchone(
        "SELECT 1 FROM events WHERE run_id = ? AND pos < ? LIMIT 1", (run_id, start_pos)
    )
    return row is not None


def _record_problems(
    source: AuditSource,
    run_id: Any,
    stats: tuple[int, int, int] | None,
    terminals: list[tuple[int, int]],
    record: tuple[int, str] | None,
) -> list[str]:
    """How a run record disagrees with its events (they are written in one transaction)."""
    if record is None:
        first = source.fetchone("SELECT min(pos) FROM events WHERE run_id = ?", (run_id,))
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


def _locate_gap(source: AuditSource, run_id: Any, expected: int, start_pos: int) -> Problem:
    """The first row of `run_id` whose seq is not the next one (the run is known broken),
    from seq `expected` at `start_pos` on."""
    bound, args = ("", (run_id,)) if start_pos <= 1 else (" AND pos >= ?", (run_id, start_pos))
    rows = source.cursor(f"SELECT seq, pos FROM events WHERE run_id = ?{bound} ORDER BY seq", args)
    for seq, pos in _rows(rows):
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


def _after_terminal(source: AuditSource, run_id: Any, ended_at: int) -> Problem:
    row = source.fetchone(
        "SELECT pos, seq FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT 1",
        (run_id, ended_at),
    )
    return Problem(
        SEQ,
        row[0],
        f"run {run_id} ended at seq {ended_at} with its terminal event, yet pos {row[0]}"
        f" continues it with seq {row[1]}",
    )


Stats = tuple[int, int, int]
Merged = tuple[Any, Stats | None, list[tuple[int, int]], tuple[int, str] | None]


def _merged(source: AuditSource, start_pos: int, live_runs: str) -> Iterator[Merged]:
    """Per run id, in order: (count, min seq, max seq), its terminal events, its record.

    Three queries sorted by run id, walked in step: one row per run in memory.
    The two over `events` use the `(run_id, seq)` index or one plain scan.
    """
    order = source.run_order
    # From pos 1 the whole table (a row below 1 is reported on its own); else the range.
    where, args = ("", ()) if start_pos <= 1 else (" WHERE pos >= ?", (start_pos,))
    stats = _Peek(
        source.cursor(
            f"SELECT run_id, count(*), min(seq), max(seq) FROM events{where} GROUP BY run_id"
            f" ORDER BY run_id{order}",
            args,
        )
    )
    ends = _Peek(
        source.cursor(
            f"SELECT run_id, seq, pos FROM events{source.scan_hint}"
            f" WHERE type IN ({_TERMINAL_SQL}){where.replace(' WHERE', ' AND')}"
            f" ORDER BY run_id{order}, seq",
            args,
        )
    )
    chosen = f" WHERE {live_runs}" if live_runs else ""
    records = _Peek(
        source.cursor(f"SELECT id, last_seq, status FROM runs{chosen} ORDER BY id{order}")
    )
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
    """The databases' ordering of values (numbers, then text, then blobs) as a Python key.

    Text sorts by code point, as Python compares strings: SQLite's default, and
    what PostgreSQL's source asks for with `COLLATE "C"` (UTF-8 byte order).
    """
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    if value is None:
        return (0, 0)
    return (3, bytes(value))


class _Peek:
    """A cursor with one row of look-ahead, taken only when its key matches."""

    def __init__(self, cursor: RowCursor) -> None:
        self.cursor = cursor
        self.head: Any = cursor.fetchone()

    def take(self, key: tuple[int, Any]) -> Any:
        if self.head is None or _order(self.head[0]) != key:
            return None
        row, self.head = self.head, self.cursor.fetchone()
        return row


def _rows(cursor: RowCursor, size: int = 1000) -> Iterator[Any]:
    """Every row of `cursor`, one at a time, fetched `size` at a time."""
    while rows := cursor.fetchmany(size):
        yield from rows
