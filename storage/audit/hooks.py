"""What another part of steplog may add to a verification: checks the audit runs for it.

The audit knows one rule about a log's oldest rows: they may have been moved
elsewhere, and then the scan starts later (`verify(start_pos=, prev_hash=)`).
Who moved them, and what must hold about that, is not the audit's business:
the archive (storage/archive/) keeps its own records in the log and knows
which run records describe archived runs and what its records must agree
with. It hands `verify` an `AuditHook`; the audit runs the hook's checks
inside the same read snapshot as its own, through the same row-source, so
they hold on every backend and for every caller (CLI, HTTP) alike.
"""

from __future__ import annotations

from typing import Protocol

from storage.audit.model import Anchor, Problem
from storage.audit.source import AuditSource


class AuditHook(Protocol):
    """Checks that `verify` runs inside its snapshot, over its row-source."""

    @property
    def note(self) -> str | None:
        """What the report should tell its reader (e.g. which positions it did not check)."""

    def live_runs(self) -> str:
        """An SQL condition on `runs` selecting the records whose events should be live
        (empty: all of them). Records of runs whose events were moved are not compared."""

    def broken(self, source: AuditSource) -> Problem | None:
        """A broken position the hook found (it competes with the scan's for the first)."""

    def problems(self, source: AuditSource) -> list[Problem]:
        """Problems reported whatever the first broken position is."""

    def anchor(self, source: AuditSource, anchor: Anchor) -> Problem | None:
        """The verdict on an anchor whose row is not in the log (None: not the hook's
        business, e.g. a gap the chain scan reports)."""
