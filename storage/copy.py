"""`steplog log copy`: copy a whole log into an empty one, on any backend, chain verified.

Rows arrive exactly as they were — pos, seq, `at`, data text and hash — so the
hash chain carries over unchanged and old cursors (`Last-Event-ID`, global
`pos`) stay valid. Nothing is trusted on the way: each source event's hash is
recomputed with `storage.chain` before it is sent, and after the insert the
copy is read back *inside the same transaction* and its chain recomputed
again. Only a copy that verifies is committed; anything else rolls back and
leaves the target empty.

The source must be quiet (no `serve` or `worker` running on it): its head is
compared before and after, and a change aborts the copy. A source that has
archived a prefix (storage/archive/) is refused up front, in one line: its live
rows start after the prefix, so a copy from pos 1 would fail on the chain as if
it were tampered with, and a copy without the segment records would not verify. What differs per
backend is only how the target takes the rows (`CopyTarget`:
storage/postgres/copy.py, storage/sqlite/copy.py), reached through
`storage.backends`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from storage import chain
from storage.backends import backend_for
from storage.errors import SteplogError
from storage.interface import EventLog
from storage.jsonenc import dumps
from storage.model import Event, Run

PAGE = 5000

RUN_COLUMNS = [
    "id", "function", "params", "status", "attempt", "max_attempts", "last_seq",
    "idempotency_key", "lease_owner", "lease_expires_at", "available_at", "created_at",
    "updated_at", "started_at", "finished_at", "result", "error", "idempotency_fingerprint",
]  # fmt: skip
EVENT_COLUMNS = [
    "pos", "run_id", "seq", "type", "step", "message", "pct", "data", "attempt", "at", "hash",
]  # fmt: skip

# Run tokens already handed out are signed with this secret: carry it over so they keep working.
CARRIED_SECRETS = ("run-token",)


def require_empty(runs: int, events: int) -> None:
    """Refuse a target that already holds anything (a copy never merges logs)."""
    if runs or events:
        raise SteplogError(
            f"the target already holds {runs} runs and {events} events; copy only into an empty log"
        )


class ChainBroken(SteplogError):
    """The hash chain does not verify: the log was altered, or the copy is damaged."""

    status = 409
    title = "Hash chain broken"


class ArchivedSource(SteplogError):
    """The source log has archived a prefix: only whole logs are copied."""

    status = 409
    title = "Archived log"


@dataclass(frozen=True, slots=True)
class CopyReport:
    runs: int
    events: int
    head: int
    head_hash: str


class CopyTarget(Protocol):
    """An empty log taking a copy inside one transaction (the backend's part of a copy)."""

    async def begin(self) -> None:
        """Create the schema if needed, start the transaction, keep every steplog writer
        out of the log meanwhile, and refuse (`SteplogError`) a log that is not empty."""

    async def put_runs(self, records: list[tuple[object, ...]]) -> None:
        """Insert run rows (in `RUN_COLUMNS` order)."""

    async def put_events(self, records: list[tuple[object, ...]]) -> None:
        """Insert event rows (in `EVENT_COLUMNS` order) exactly as given."""

    async def put_secret(self, key: str, value: bytes) -> None:
        """Keep the `meta` secret `key`."""

    async def read_back(self, after: int, limit: int) -> list[Event]:
        """The copied events after `after`, in `pos` order (uncommitted, same transaction)."""

    async def runs_out_of_step(self) -> int:
        """How many copied runs' `last_seq` disagrees with their copied events."""

    async def commit(self) -> None:
        """Make the copy durable."""

    async def abort(self) -> None:
        """Roll the copy back and let go of the target (also after `commit`: then it only
        lets go)."""


class ChainCheck:
    """Recomputes the chain one event at a time (pure: no I/O)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.prev = chain.GENESIS_HASH
        self.count = 0
        self.last_pos = 0

    def check(self, e: Event) -> None:
        if e.pos <= self.last_pos:
            raise ChainBroken(f"{self.where}: pos {e.pos} after {self.last_pos} (not increasing)")
        canonical = chain.canonical_row(
            e.pos, e.run_id, e.seq, e.type, e.step, e.message, e.pct, e.data, e.attempt, e.at
        )
        expected = chain.link(self.prev, canonical)
        if e.hash != expected:
            raise ChainBroken(
                f"{self.where}: event pos {e.pos} (run {e.run_id} seq {e.seq}) has hash"
                f" {e.hash[:16]}…, the chain says {expected[:16]}…"
            )
        self.prev, self.count, self.last_pos = e.hash, self.count + 1, e.pos


async def copy_log(
    source: EventLog,
    target_url: str,
    *,
    progress: Callable[[str, int], None] | None = None,
) -> CopyReport:
    """Copy every run and event of the open `source` into the empty log at `target_url`."""
    tell = progress or (lambda what, count: None)
    await _refuse_archived(source)
    head_before = await source.head()
    target = backend_for(target_url).copy_target(target_url)
    try:
        await target.begin()
        report = await _copy_into(target, source, tell)
        if await source.head() != head_before:
            raise SteplogError(
                "the source log changed during the copy: stop every steplog process using it"
            )
        await target.commit()
    finally:
        await target.abort()
    return report


async def _refuse_archived(source: EventLog) -> None:
    """Refuse, before the target is touched, a source whose prefix is in segments."""
    from storage.archive import ArchiveError, store_for

    try:
        prefix = await store_for(source).prefix()
    except ArchiveError:
        return  # a log kind that cannot archive has nothing archived
    if prefix.last_pos:
        raise ArchivedSource(
            f"positions 1..{prefix.last_pos} are archived in {prefix.segments} segment(s), and"
            " `steplog log copy` copies only a log that was never archived: nothing was copied"
            " (move the database itself, the SQLite file or a pg_dump, with its archive"
            " directory)"
        )


async def _copy_into(
    target: CopyTarget, source: EventLog, tell: Callable[[str, int], None]
) -> CopyReport:
    """The copy itself, inside the target transaction: any exception rolls it all back."""
    run_count = 0
    async for page in _run_pages(source):
        await target.put_runs(page)
        run_count += len(page)
        tell("runs", run_count)
    sent = ChainCheck("source")
    async for events_page in _event_pages(source):
        for event in events_page:
            sent.check(event)
        await target.put_events([_event_record(e) for e in events_page])
        tell("events", sent.count)
    for name in CARRIED_SECRETS:
        await target.put_secret(f"secret:{name}", await source.secret(name))
    arrived = await _verify_arrival(target)
    if (arrived.count, arrived.prev) != (sent.count, sent.prev):
        raise ChainBroken(
            f"the copy holds {arrived.count} events ending in {arrived.prev[:16]}…,"
            f" the source {sent.count} ending in {sent.prev[:16]}…"
        )
    if await target.runs_out_of_step():
        raise SteplogError("some runs' last_seq disagrees with their events in the source")
    return CopyReport(run_count, sent.count, sent.last_pos, sent.prev)


async def _verify_arrival(target: CopyTarget) -> ChainCheck:
    """Read the copy back (uncommitted, same transaction) and recompute its chain."""
    arrived = ChainCheck("target")
    after = 0
    while True:
        events = await target.read_back(after, PAGE)
        for event in events:
            arrived.check(event)
        if len(events) < PAGE:
            return arrived
        after = events[-1].pos


async def _run_pages(source: EventLog) -> AsyncIterator[list[tuple[object, ...]]]:
    before: str | None = None
    while True:
        runs = await source.list_runs(limit=1000, before=before)
        if not runs:
            return
        yield [_run_record(run) for run in runs]
        before = runs[-1].id


async def _event_pages(source: EventLog) -> AsyncIterator[list[Event]]:
    after = 0
    while True:
        events = await source.read_all(after, PAGE)
        if not events:
            return
        yield events
        after = events[-1].pos


def _run_record(run: Run) -> tuple[object, ...]:
    # `available_at` (a queued retry's back-off) is not part of the Run record:
    # a run waiting out a back-off becomes claimable at once after the copy.
    result = None if run.result is None else dumps(run.result)
    return (run.id, run.function, dumps(run.params), run.status.value, run.attempt,
            run.max_attempts, run.last_seq, run.idempotency_key, run.lease_owner,
            run.lease_expires_at, 0.0, run.created_at, run.updated_at, run.started_at,
            run.finished_at, result, run.error, run.idempotency_fingerprint)  # fmt: skip


def _event_record(e: Event) -> tuple[object, ...]:
    return (e.pos, e.run_id, e.seq, e.type, e.step, e.message, e.pct, e.data, e.attempt, e.at,
            e.hash)  # fmt: skip
