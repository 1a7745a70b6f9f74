"""The audit: verify a log's hash chain, anchor its head, export it, show a run's timeline.

One package for one concept, the same on every backend. The checks are written
once (`scan`: the chain and the diagnosis of a broken link; `runs`: positions,
per-run `seq` runs and the run records; `verify`: the report) over a typed
row-source (`source`) that each backend provides (`sqlite`, `postgres`).
`export` streams events as JSONL or CSV, `file` verifies a JSONL export
offline, `timeline` folds one run's events into its steps, and `model` is the
small vocabulary all of them report in.
"""

from __future__ import annotations

from storage.audit.model import Anchor, AuditError, Problem, Report, UnknownRun
from storage.audit.verify import head_anchor, open_source, stored_secret, verify, verify_log

__all__ = [
    "Anchor",
    "AuditError",
    "Problem",
    "Report",
    "UnknownRun",
    "head_anchor",
    "open_source",
    "stored_secret",
    "verify",
    "verify_log",
]
