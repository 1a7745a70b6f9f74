"""Which prefix of the live log can be archived: a pure rule over run spans.

The archiver removes a contiguous prefix of global positions, `start + 1 .. P`,
never a hole in the middle: the live log then still starts at one row whose
`prev_hash` is the last archived hash, so it verifies from that anchor alone.
`P` must be a *cut*: every run with an event at or below `P` has all of its
events at or below `P`, has ended, and ended before the cutoff. A run still
running (or queued, or ended too recently) stops the prefix at the last cut
before its first event, however old the runs after it are: operators see that
run named in the result (`blocked_by`) and can cancel it if it is stuck.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FINISHED = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class RunSpan:
    """One run with events after the archived prefix: where they start and end, and
    whether the run may be archived (ended, before the cutoff)."""

    run_id: str
    first_pos: int
    last_pos: int
    eligible: bool
    why: str = ""
    """Why not, when it is not eligible (for the operator)."""


def span_of(row: Any, cutoff_iso: str) -> RunSpan:
    """A run's span from a row of the `archive_spans` query (both backends' queries.sql:
    run id, first pos, pos of the last and of the first event, status, end), and
    whether it may be archived."""
    run_id, first, last, seq_one, status, finished_at = row
    why = ""
    if status is None:
        why = "has events but no record"
    elif status not in FINISHED:
        why = f"is {status}"
    elif finished_at is None or str(finished_at) >= cutoff_iso:
        why = f"ended at {finished_at}, after the cutoff"
    elif last is None or seq_one != first:
        why = "is not whole in the live log"
    return RunSpan(str(run_id), int(first), int(last or first), not why, why)


@dataclass(frozen=True, slots=True)
class Cut:
    """The answer: archive `start + 1 .. last_pos` (None: nothing can be archived now)."""

    last_pos: int | None
    blocked_by: RunSpan | None = None
    """The first run that stopped the prefix (not ended, or too recent)."""
    needs_wider: bool = False
    """No cut inside the window, but only because a run reaches past it: look further."""


def choose_cut(start: int, spans: list[RunSpan], window_end: int) -> Cut:
    """The largest cut after `start` given the runs whose first event is in
    `start + 1 .. window_end`, in order of their first event.

    Positions are contiguous, so a cut is a position `reach` that some run ends at,
    such that no run seen so far reaches past it and the next run starts after it.
    """
    reach = start
    cut: int | None = None
    for span in sorted(spans, key=lambda s: s.first_pos):
        if reach > start and span.first_pos > reach:
            cut = reach
        if not span.eligible or span.first_pos <= start:
            return Cut(cut, blocked_by=span)
        reach = max(reach, span.last_pos)
    if reach > start and reach <= window_end:
        return Cut(reach)
    return Cut(cut, needs_wider=reach > window_end and cut is None)
