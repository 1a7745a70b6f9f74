"""What an audit reports: problems (kind + position), the verdict, and anchors.

Kept apart from the code that finds problems so the CLI, the HTTP routes and the
export verifier all speak the same small vocabulary, and a report renders the
same way wherever it is shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from storage.chain import GENESIS_HASH

# The kinds of problem an audit names. Each is a sentence an auditor can act on.
CHANGED = "changed"
"""A row no longer matches its hash: its content (or its hash) was edited."""
MISSING = "missing"
"""Rows are gone from the middle of the log (a `pos` gap), or a run's events are."""
INSERTED = "inserted"
"""A row that the writer never wrote was slipped in (later rows renumbered)."""
OUT_OF_ORDER = "out-of-order"
"""Two rows exchanged places."""
SEQ = "seq"
"""A run's `seq` numbers are not 1, 2, 3… or continue after its terminal event."""
TRUNCATED = "truncated"
"""Rows were cut off the end of the log."""
ANCHOR = "anchor"
"""The row an anchor names has another hash: history up to it was rewritten."""
TRIGGERS = "triggers"
"""The append-only triggers are missing or were altered."""
RECORDS = "records"
"""A run record disagrees with the log (run unknown, or event count differs)."""
EXPORT = "export"
"""An export file is malformed or incomplete (no trailer, counts differ)."""

KINDS: tuple[str, ...] = (
    CHANGED,
    MISSING,
    INSERTED,
    OUT_OF_ORDER,
    SEQ,
    TRUNCATED,
    ANCHOR,
    TRIGGERS,
    RECORDS,
    EXPORT,
)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the log: what kind, where (a `pos`, or None), and why."""

    kind: str
    pos: int | None
    detail: str

    def line(self) -> str:
        where = f"pos {self.pos}" if self.pos is not None else "log"
        return f"{where}: {self.kind}: {self.detail}"

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "pos": self.pos, "detail": self.detail}


@dataclass(slots=True)
class Report:
    """The verdict of one verification: counts, the head it reached, and the problems.

    `problems` is sorted by position (problems without one last), so the first
    entry is the first bad position.
    """

    events: int = 0
    head_pos: int = 0
    head_hash: str = GENESIS_HASH
    problems: list[Problem] = field(default_factory=list)
    source: str = ""
    note: str | None = None
    """What this verification could and could not prove (e.g. for a filtered export)."""
    elapsed_s: float = 0.0
    head_label: str = "head"
    """How the summary names the last row: `head`, or `last exported` for a filtered export."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: Problem | None) -> None:
        if problem is not None:
            self.problems.append(problem)
            self.problems.sort(key=_problem_order)

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    def summary(self) -> str:
        """`ok: N events, head pos P hash H`, or the first bad position and its kind."""
        if self.ok:
            return (
                f"ok: {self.events} events, {self.head_label} pos {self.head_pos}"
                f" hash {self.head_hash}"
            )
        first = self.problems[0]
        more = len(self.problems) - 1
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        return f"FAIL {first.line()}{tail}"

    def lines(self) -> list[str]:
        """The summary, then every problem, then the note: what the CLI prints."""
        out = [self.summary()]
        if not self.ok:
            # The summary names the first problem already: list only the others.
            out.extend(f"  {problem.line()}" for problem in self.problems[1:])
            out.append(f"  verified {self.events} events before stopping")
        if self.note:
            out.append(f"note: {self.note}")
        return out

    def anchor(self) -> Anchor:
        return Anchor(self.head_pos, self.head_hash)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "head": {"pos": self.head_pos, "hash": self.head_hash},
            "anchor": self.anchor().line() if self.ok and self.head_label == "head" else None,
            "problems": [problem.as_json() for problem in self.problems],
            "summary": self.summary(),
            "source": self.source,
            "note": self.note,
            "elapsed_s": round(self.elapsed_s, 3),
        }


def _problem_order(problem: Problem) -> tuple[int, int]:
    return (0, problem.pos) if problem.pos is not None else (1, 0)


class AuditError(Exception):
    """The audit could not run at all (no such file, not a steplog log, bad anchor)."""


class UnknownRun(AuditError):
    """The export or timeline names a run the log does not have."""


_ANCHOR = re.compile(r"^steplog-anchor\s+pos=(\d+)\s+hash=([0-9a-f]{64})(?:\s.*)?$")


@dataclass(frozen=True, slots=True)
class Anchor:
    """A head kept somewhere else: `steplog-anchor pos=P hash=H`.

    Verifying against it proves the row at `pos` still exists with that hash, so
    nothing up to it was rewritten and nothing after it was cut off the end.
    """

    pos: int
    hash: str

    def line(self) -> str:
        return f"steplog-anchor pos={self.pos} hash={self.hash}"

    @classmethod
    def parse(cls, text: str) -> Anchor:
        match = _ANCHOR.match(text.strip())
        if match is None:
            raise AuditError(
                f"not an anchor line: {text.strip()[:120]!r}; expected what `steplog audit anchor`"
                " prints: 'steplog-anchor pos=<int> hash=<64 hex>'"
            )
        return cls(int(match.group(1)), match.group(2))
