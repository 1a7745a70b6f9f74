"""Verify a JSONL export offline, without the database.

Every event line carries its `hash` and `prev_hash`, so each row is checked on
its own: `sha256_hex(prev_hash + canonical(row)) == hash`. What that proves
depends on the export:

- a **full** export (no filter) must also be one unbroken chain: `pos` runs
  1, 2, 3… and each row's `prev_hash` is the hash of the row before it, the
  first being 64 zeros. Then the file proves the whole log up to its head,
  exactly as verifying the database does, and an anchor can be checked
  against it;
- a **filtered** export proves that each row is the row that was hashed into
  the chain after the recorded `prev_hash`, and that adjacent rows link. The
  rows the filter left out are not in the file, so it cannot prove that the
  rows it holds are *all* the matching rows, or that they are linked to the
  rest of the log: for that, verify the database or a full export. Exports
  filtered only by run or function hold whole runs, so their `seq` runs are
  checked too.

The trailer line (`steplog_export_end`) must be present and agree with the
rows, so a file cut short is reported rather than verified as a shorter log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any, TextIO

from storage import chain
from storage.audit.model import (
    ANCHOR,
    CHANGED,
    EXPORT,
    MISSING,
    OUT_OF_ORDER,
    TRUNCATED,
    Anchor,
    AuditError,
    Problem,
    Report,
)
from storage.audit.scan import (
    TERMINAL_TYPES,
    WINDOW,
    diagnose,
    link_at,
    position_problem,
    seq_problem,
)
from storage.audit.source import Row

FIELDS = ("pos", "run_id", "seq", "type", "step", "message", "pct", "data", "attempt", "at", "hash")
_ROW = itemgetter(*FIELDS)

FILTERED_NOTE = (
    "filtered export: each row was checked against its recorded prev_hash and adjacent rows"
    " against each other; rows the filter left out are not in the file, so the chain between"
    " them can only be checked against the database or a full export"
)


class _Lines:
    """The export's event rows with their recorded prev_hash; the trailer once reached."""

    def __init__(self, handle: TextIO) -> None:
        self.handle = handle
        self.number = 1  # the header was line 1
        self.trailer: dict[str, Any] | None = None
        self.problem: Problem | None = None

    def __iter__(self) -> Iterator[tuple[Row, Any]]:
        for line in self.handle:
            self.number += 1
            if not line.strip():
                continue
            if self.trailer is not None:
                self.problem = Problem(
                    EXPORT, None, f"line {self.number}: more lines follow the trailer"
                )
                return
            try:
                value = json.loads(line)
                if "steplog_export_end" in value:
                    self.trailer = value
                    continue
                row = _ROW(value)
                prev = value["prev_hash"]
            except (ValueError, TypeError, KeyError) as exc:
                self.problem = Problem(
                    EXPORT, None, f"line {self.number} is not an exported event ({exc!r})"
                )
                return
            yield row, prev


def verify_export(path: str | Path, anchor: Anchor | None = None) -> Report:
    """Verify the JSONL export at `path` (see the module docstring for what it proves)."""
    started = time.perf_counter()
    file = Path(path)
    if not file.is_file():
        raise AuditError(f"no export file at {file}")
    report = Report(source=str(file))
    with file.open(encoding="utf-8") as handle:
        header = _header(handle.readline(), file)
        full = bool(header.get("full"))
        whole_runs = full or not ({"since", "until", "type"} & set(header.get("filters") or {}))
        lines = _Lines(handle)
        checker = _Checker(full=full, whole_runs=whole_runs, anchor=anchor)
        report.add(checker.run(iter(lines)))
    report.events, report.head_pos, report.head_hash = (
        checker.count,
        checker.last_pos,
        checker.last_hash,
    )
    if report.ok:
        report.add(lines.problem)
        report.add(_check_trailer(lines.trailer, checker))
        head = header.get("head") or {}
        if full and report.ok and checker.last_pos != head.get("pos"):
            report.add(
                Problem(
                    TRUNCATED,
                    checker.last_pos + 1,
                    f"the header says the log's head was pos {head.get('pos')}, the rows end at"
                    f" pos {checker.last_pos}",
                )
            )
        if anchor is not None and report.ok:
            report.add(_check_anchor(anchor, checker, full, head))
    if not full:
        report.note = FILTERED_NOTE
        report.head_label = "last exported"
    report.elapsed_s = time.perf_counter() - started
    return report


def _header(line: str, file: Path) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("steplog_export") != 1:
        raise AuditError(
            f"{file} is not a steplog JSONL export (its first line is not the export header)"
        )
    return header


class _Checker:
    """Walks the rows of an export; stops at the first problem."""

    def __init__(self, *, full: bool, whole_runs: bool, anchor: Anchor | None) -> None:
        self.full = full
        self.whole_runs = whole_runs
        self.anchor = anchor
        self.count = 0
        self.last_pos = 0
        self.last_hash = chain.GENESIS_HASH
        self.before_last: str | None = None
        self.anchored_hash: str | None = None
        self.runs: dict[Any, int] = {}

    def run(self, rows: Iterator[tuple[Row, Any]]) -> Problem | None:
        for row, prev in rows:
            problem = self._check(row, prev, rows)
            if problem is not None:
                return problem
            self.before_last = self.last_hash
            self.last_pos, self.last_hash = row[0], row[10]
            self.count += 1
            if self.anchor is not None and row[0] == self.anchor.pos:
                self.anchored_hash = row[10]
        return None

    def _check(self, row: Row, prev: Any, rows: Iterator[tuple[Row, Any]]) -> Problem | None:
        pos = row[0]
        if not isinstance(pos, int) or pos <= self.last_pos:
            return Problem(
                OUT_OF_ORDER, pos if isinstance(pos, int) else None,
                f"pos {pos!r} comes after pos {self.last_pos}: rows are out of order",
            )  # fmt: skip
        adjacent = pos == self.last_pos + 1
        if self.full and not adjacent:
            return position_problem(self.last_pos, pos)
        if adjacent and link_at(self.last_hash, row) == row[10]:
            if prev != self.last_hash:
                return Problem(
                    CHANGED, pos, f"its prev_hash field is not the hash of pos {pos - 1}"
                )
        elif self.full:
            window = [row, *(r for r, _ in _take(rows, WINDOW))]
            return diagnose(self.before_last, self.last_hash, window)
        elif prev is None:
            return Problem(
                MISSING, pos, f"the database had no row at pos {pos - 1} when this was exported"
            )
        elif not isinstance(prev, str) or link_at(prev, row) != row[10]:
            return Problem(
                CHANGED, pos, f"the row at pos {pos} does not match its hash and prev_hash"
            )
        elif adjacent:
            return Problem(
                CHANGED,
                pos,
                f"the row links to prev_hash {prev}, but the exported row at pos {pos - 1}"
                f" has hash {self.last_hash}",
            )
        if self.whole_runs:
            run_id, seq = row[1], row[2]
            last = self.runs.get(run_id, 0)
            if seq != last + 1:
                return seq_problem(pos, run_id, seq, last)
            self.runs[run_id] = -seq if row[3] in TERMINAL_TYPES else seq
        return None


def _take(rows: Iterator[tuple[Row, Any]], limit: int) -> Iterator[tuple[Row, Any]]:
    for _, item in zip(range(limit), rows, strict=False):
        yield item


def _check_trailer(trailer: dict[str, Any] | None, checker: _Checker) -> Problem | None:
    if trailer is None:
        return Problem(
            EXPORT,
            None,
            f"the export ends after {checker.count} events without its trailer line:"
            " the file was cut short or the export was interrupted",
        )
    last = trailer.get("last") or {}
    ends = (last.get("pos"), last.get("hash"))
    if trailer.get("events") != checker.count or (
        checker.count and ends != (checker.last_pos, checker.last_hash)
    ):
        return Problem(
            EXPORT,
            None,
            f"the trailer says {trailer.get('events')} events ending at pos {last.get('pos')},"
            f" the file holds {checker.count} ending at pos {checker.last_pos}",
        )
    return None


def _check_anchor(
    anchor: Anchor, checker: _Checker, full: bool, head: dict[str, Any]
) -> Problem | None:
    """The anchored row must be in the exported snapshot, with the anchored hash."""
    recorded = head.get("pos")
    head_pos: int = recorded if isinstance(recorded, int) else checker.last_pos
    if anchor.pos > head_pos:
        return Problem(
            TRUNCATED,
            head_pos + 1,
            f"the anchor says the log reached pos {anchor.pos}, but the exported log ended at"
            f" pos {head_pos}: rows were cut off the end",
        )
    if anchor.pos == head_pos and head.get("hash") not in (None, anchor.hash):
        return Problem(
            ANCHOR,
            anchor.pos,
            f"the exported head at pos {anchor.pos} has hash {head.get('hash')}, the anchor says"
            f" {anchor.hash}: the log up to that point was rewritten",
        )
    if checker.anchored_hash is not None and checker.anchored_hash != anchor.hash:
        return Problem(
            ANCHOR,
            anchor.pos,
            f"the row at the anchored pos {anchor.pos} has hash {checker.anchored_hash}, the"
            f" anchor says {anchor.hash}: the log up to that point was rewritten",
        )
    if full and anchor.pos and checker.anchored_hash is None:
        return Problem(MISSING, anchor.pos, f"the anchored pos {anchor.pos} is not in the export")
    return None
