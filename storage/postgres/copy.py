"""`steplog log copy`: move a whole log (any backend) into an empty PostgreSQL one.

Rows arrive exactly as they were — pos, seq, `at`, data text and hash — so the
hash chain carries over unchanged and old cursors (`Last-Event-ID`, global
`pos`) stay valid. Nothing is trusted on the way: each source event's hash is
recomputed with `storage.chain` before it is sent, and after the insert the
copy is read back *inside the same transaction* and its chain recomputed
again. Only a copy that verifies is committed; anything else rolls back and
leaves the target empty.

The source must be quiet (no `serve` or `worker` running on it): its head is
compared before and after, and a change aborts the copy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg

from storage import chain
from storage.errors import SteplogError
from storage.interface import EventLog
from storage.jsonenc import dumps
from storage.model import Event, Run
from storage.postgres import migrations
from storage.postgres.errors import translate
from storage.postgres.queries import QUERIES
from storage.postgres.rows import event_from_record

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


class ChainBroken(SteplogError):
    """The hash chain does not verify: the log was altered, or the copy is damaged."""

    status = 409
    title = "Hash chain broken"


@dataclass(frozen=True, slots=True)
class CopyReport:
    runs: int
    events: int
    head: int
    head_hash: str


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
    head_before = await source.head()
    try:
        conn = await asyncpg.connect(target_url)
        try:
            await migrations.migrate(conn)
            async with conn.transaction():
                report = await _copy_into(conn, source, tell)
                if await source.head() != head_before:
                    raise SteplogError(
                        "the source log changed during the copy:"
                        " stop every steplog process using it"
                    )
        finally:
            await conn.close()
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise translate(exc) from exc
    return report


async def _copy_into(
    conn: asyncpg.Connection, source: EventLog, tell: Callable[[str, int], None]
) -> CopyReport:
    """The copy itself, inside the target transaction: any exception rolls it all back."""
    # Hold the append lock: no steplog process can write the target meanwhile.
    await conn.execute(QUERIES["append_lock"], await conn.fetchval(QUERIES["append_lock_key"]))
    counts = await conn.fetchrow(QUERIES["count_rows"])
    runs, events = (0, 0) if counts is None else counts
    if runs or events:
        raise SteplogError(
            f"the target already holds {runs} runs and {events} events; copy only into an empty log"
        )
    run_count = 0
    async for page in _run_pages(source):
        await conn.copy_records_to_table("runs", records=page, columns=RUN_COLUMNS)
        run_count += len(page)
        tell("runs", run_count)
    sent = ChainCheck("source")
    async for events_page in _event_pages(source):
        for event in events_page:
            sent.check(event)
        records = [_event_record(e) for e in events_page]
        await conn.copy_records_to_table("events", records=records, columns=EVENT_COLUMNS)
        tell("events", sent.count)
    for name in CARRIED_SECRETS:
        await conn.execute(QUERIES["insert_secret"], f"secret:{name}", await source.secret(name))
    arrived = await _verify_arrival(conn)
    if (arrived.count, arrived.prev) != (sent.count, sent.prev):
        raise ChainBroken(
            f"the copy holds {arrived.count} events ending in {arrived.prev[:16]}…,"
            f" the source {sent.count} ending in {sent.prev[:16]}…"
        )
    if await conn.fetchval(QUERIES["runs_out_of_step"]):
        raise SteplogError("some runs' last_seq disagrees with their events in the source")
    return CopyReport(run_count, sent.count, sent.last_pos, sent.prev)


async def _verify_arrival(conn: asyncpg.Connection) -> ChainCheck:
    """Read the copy back (uncommitted, same transaction) and recompute its chain."""
    arrived = ChainCheck("target")
    after = 0
    while True:
        rows = await conn.fetch(QUERIES["read_all"], after, PAGE)
        for row in rows:
            arrived.check(event_from_record(row))
        if len(rows) < PAGE:
            return arrived
        after = rows[-1]["pos"]


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
