"""Audit an event log: verify the hash chain, take anchors, name what is wrong.

The audit only ever reads, through a backend's row-source
(`storage.audit.source`), inside one read snapshot, so it checks one
consistent state even while `serve` keeps appending. Every check is written
once here and in the modules it calls, so SQLite and PostgreSQL give the same
verdict for the same tampering.

What it checks, in one pass plus a few SQL aggregates over the indexes:
- every row's hash against the previous row's (`storage.chain`), and `pos`
  contiguous from the start: see `storage.audit.scan` for how a broken link
  is named;
- each run's `seq` is 1, 2, 3… in `pos` order, and nothing follows its
  terminal event (`storage.audit.runs`);
- the highest position the database ever handed out (SQLite's AUTOINCREMENT)
  is not above the head, which would mean rows were cut off the end;
- the run records agree with the log (event count, ended or not);
- both append-only triggers exist exactly as the schema defines them;
- with an anchor: the anchored row still exists with the anchored hash (a row
  moved out of the log is judged by the hook that moved it).

A log whose oldest rows were moved elsewhere is verified from a starting
point: `start_pos` and the hash of the row before it (by default pos 1 and
the genesis hash).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from storage import chain
from storage.audit import runs
from storage.audit.hooks import AuditHook
from storage.audit.model import ANCHOR, TRUNCATED, Anchor, Problem, Report
from storage.audit.scan import ChainScan, first_gap
from storage.audit.source import AuditSource, hash_at, head

BATCH = 5000
"""Rows per batch: big enough to amortise the call, small enough for memory."""


def open_source(url: str | Path) -> AuditSource:
    """The log a `--db` / `STEPLOG_DB` value names, opened read-only for the audit."""
    from storage.backends import backend_for

    return backend_for(str(url)).audit_source(str(url))


def verify_log(url: str | Path, anchor: Anchor | None = None, *, batch: int = BATCH) -> Report:
    """Open the log `url` names, verify it (see `verify`), close it.

    A log may have moved its oldest runs into archive segments: the archive
    knows where the live log starts and what its records must agree with, so
    it runs the verification (`storage.archive.audit.verify_live`), from the
    archived prefix on, with its checks as hooks. A log never archived is
    verified from pos 1 exactly as without it.
    """
    from storage.archive.audit import verify_live

    source = open_source(url)
    try:
        return verify_live(source, anchor, batch=batch)
    finally:
        source.close()


def head_anchor(url: str | Path) -> Anchor:
    """The current head of the log `url` names, as an anchor (pos 0 and the genesis hash
    for an empty log)."""
    source = open_source(url)
    try:
        pos, hash_ = head(source)
    finally:
        source.close()
    return Anchor(pos, hash_ or chain.GENESIS_HASH)


def stored_secret(url: str | Path, name: str) -> bytes | None:
    """The log's secret `name` (the run-token key: `steplog runs show` mints a link with
    it), read-only; None when no server ever created it."""
    source = open_source(url)
    try:
        return source.secret(name)
    finally:
        source.close()


def verify(
    source: AuditSource,
    anchor: Anchor | None = None,
    *,
    start_pos: int = 1,
    prev_hash: str = chain.GENESIS_HASH,
    hooks: Sequence[AuditHook] = (),
    batch: int = BATCH,
) -> Report:
    """Verify the log in one read snapshot; never writes.

    The report lists the first broken position (of the chain, the positions or
    a `seq` run: nothing after it can be trusted, so nothing after it is
    reported), plus what is wrong regardless of position: the triggers, the
    end of the log (the positions handed out, the anchor), and the run records.
    Everything from `start_pos` on is checked, linking to `prev_hash`; `hooks`
    add the checks of whoever moved the rows before it (`storage.audit.hooks`).
    """
    started = time.perf_counter()
    report = Report(source=source.label)
    with source.snapshot():
        report.add(source.check_triggers())
        max_pos = head(source, start_pos)[0] or start_pos - 1
        scan = ChainScan(source, start_pos=start_pos, prev_hash=prev_hash)
        broken = scan.run(batch)
        if broken is None and scan.head_pos != max_pos:  # rows linked across a gap
            broken = first_gap(source, max_pos, start_pos)
            scan.events = 0 if broken is None or broken.pos is None else broken.pos - start_pos
            scan.head_hash = (hash_at(source, scan.head_pos) if scan.events else None) or prev_hash
        live_runs = " AND ".join(f"({sql})" for hook in hooks if (sql := hook.live_runs()))
        checks = runs.check_runs(source, start_pos, live_runs)
        report.events, report.head_pos, report.head_hash = (
            scan.events,
            scan.head_pos,
            scan.head_hash,
        )
        # Rows below `start_pos` belong to the part checked elsewhere (an archive): only a
        # position below 1, which steplog never writes, or what a hook finds is reported.
        found = [broken, runs.below_one(source), *(hook.broken(source) for hook in hooks)]
        first = [p for p in found if p is not None]
        if checks.seq is not None and all(_before(checks.seq, p) for p in first):
            first.append(checks.seq)
        if first:
            report.add(min(first, key=lambda p: p.pos if p.pos is not None else 0))
        report.add(check_assigned(source, max_pos))
        for hook in hooks:
            for problem in hook.problems(source):
                report.add(problem)
            report.note = hook.note or report.note
        if anchor is not None:
            report.add(check_anchor(source, anchor, max_pos, hooks))
        if not first:
            for problem in checks.records:
                report.add(problem)
    report.elapsed_s = time.perf_counter() - started
    return report


def _before(problem: Problem, other: Problem) -> bool:
    return problem.pos is not None and (other.pos is None or problem.pos < other.pos)


def check_assigned(source: AuditSource, max_pos: int) -> Problem | None:
    """Rows cut off the end still leave the database's high-water mark behind."""
    assigned = source.assigned_high()
    if assigned is None or assigned <= max_pos:
        return None
    gone = assigned - max_pos
    return Problem(
        TRUNCATED,
        max_pos + 1,
        f"pos {max_pos + 1}{f' to {assigned}' if gone > 1 else ''} {'were' if gone > 1 else 'was'}"
        f" written (AUTOINCREMENT reached {assigned}) but the log ends at pos {max_pos}:"
        f" {gone} row{'s were' if gone > 1 else ' was'} cut off the end",
    )


def check_anchor(
    source: AuditSource, anchor: Anchor, max_pos: int, hooks: Sequence[AuditHook] = ()
) -> Problem | None:
    """The anchored row must still exist, with the anchored hash; a row that was moved
    (archived) is for the hooks to judge."""
    if anchor.pos == 0:
        return None
    if anchor.pos > max_pos:
        return Problem(
            TRUNCATED,
            max_pos + 1,
            f"the anchor says the log reached pos {anchor.pos}, but it ends at pos {max_pos}:"
            f" at least {anchor.pos - max_pos} row(s) were cut off the end",
        )
    stored = hash_at(source, anchor.pos)
    if stored is None:  # moved by whoever a hook speaks for, or a gap the chain scan reports
        found = (hook.anchor(source, anchor) for hook in hooks)
        return next((problem for problem in found if problem is not None), None)
    if stored != anchor.hash:
        return Problem(
            ANCHOR,
            anchor.pos,
            f"the row at the anchored pos {anchor.pos} has hash {stored}, the anchor says"
            f" {anchor.hash}: the log up to that point was rewritten",
        )
    return None
