"""The writer's short way for a group of appends: one statement, checked against a cache.

A group commit of plain appends the long way takes four round trips, three of
them spent holding the append lock that every process shares (BEGIN, the lock
and the runs, the writes, NOTIFY + COMMIT: see log.py). Yet in the common case
(this process is the one appending, again and again to the same runs) the
writer already knows what the lock would tell it: the chain head its last
commit left and the runs it wrote. `WriterCache` keeps that, and `short_way`
numbers, chains and hashes the group in Python against it (the same `Numbering`
as the long way) and sends it in one call of `steplog_append_batch`
(004_append_batch.sql), run as a transaction of its own. That function takes
the append lock and writes nothing unless the head and every run are still as
cached; otherwise it raises SQLSTATE SLSTA (`is_stale`) and the writer does the
group the long way, which refills the cache. The cache can thus make an append
faster, never different: every decision is taken from values the database
confirms under the lock before anything is written.

A group the cache cannot serve (a run it does not know, an append it would
refuse, anything that is not a plain append) goes the long way directly:
refusals are only ever decided from rows read under the lock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from storage.jsonenc import c_encoder
from storage.numbering import RunState
from storage.postgres.batch import Batch, Operation
from storage.postgres.errors import is_connection_error
from storage.sqlfiles import POSTGRES as QUERIES
from storage.writer.commits import Progress
from storage.writer.writes import Append


def _not_json(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} has no place in a row")


_rows_json = (
    c_encoder(default=_not_json, allow_nan=False)
    or json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
)
"""Rows as the JSON text `steplog_append_batch` takes: one C call for the whole group
(asyncpg's per-element checks made a dozen arrays cost more to send than to number).
Strings keep their exact text (UTF-8, not escaped), and a float's shortest repr reads
back as the same double."""

STALE = "SLSTA"
"""The SQLSTATE `steplog_append_batch` raises when the cache no longer holds."""

MAX_RUNS = 4096
"""Runs kept at most; past that the cache starts afresh (it refills at the next long way)."""


def is_stale(exc: BaseException) -> bool:
    """Whether `exc` is `steplog_append_batch` finding the cache out of date."""
    return getattr(exc, "sqlstate", None) == STALE


@dataclass(slots=True)
class Sent:
    """A group sent the short way whose outcome is unknown (the connection was lost).

    It committed if and only if the row at `pos` holds `hash`: the statement writes
    nothing unless the head was `pos - 1`, so it can no longer commit once anything
    else is written there (see `PostgresEventLog._transaction`).
    """

    pos: int
    hash: str
    batch: Batch

    async def committed(self, conn: asyncpg.Connection) -> bool:
        """Whether the group is in the log; asked holding the append lock, when the
        statement has either committed or can no longer commit. If it is, `batch` is
        marked written, as `Short.send` would have (so the commit is told as any other)."""
        stored: str | None = await conn.fetchval(QUERIES["event_hash"], self.pos)
        if stored != self.hash:
            return False
        _written(self.batch)
        return True


class InDoubt(Exception):
    """The short-way statement lost its connection: it may or may not have committed."""

    def __init__(self, sent: Sent, cause: Exception) -> None:
        super().__init__(str(cause))
        self.sent = sent
        self.cause = cause


class WriterCache:
    """The chain head and run states as this writer's last commit left them."""

    def __init__(self) -> None:
        self.head: tuple[int, str] | None = None
        self.runs: dict[str, RunState] = {}

    def forget(self) -> None:
        """After a failed transaction: nothing is known any more."""
        self.head = None
        self.runs.clear()

    def remember(self, batch: Batch) -> None:
        """After a commit: its head, and the runs it read under the lock or wrote.

        Finished runs are left out: nothing more can be appended to them.
        """
        self.head = (batch.head_pos, batch.head_hash)
        if len(self.runs) + len(batch.runs) > MAX_RUNS:
            self.runs.clear()
        for run_id, state in batch.runs.items():
            if state.status.finished:
                self.runs.pop(run_id, None)
            else:
                self.runs[run_id] = RunState(state.attempt, state.status, state.last_seq)

    def batch_for(self, conn: asyncpg.Connection, ops: Sequence[Operation[Any]]) -> Short | None:
        """A batch starting from the cached head, with copies of the cached runs `ops`
        append to; None when the cache cannot serve them (not all plain appends, a run
        it does not know)."""
        if self.head is None:
            return None
        batch = Batch(conn)
        batch.head_pos, batch.head_hash = self.head
        for op in ops:
            if not isinstance(op, Append):
                return None
            run_id = op.event.run_id
            if run_id not in batch.runs:
                state = self.runs.get(run_id)
                if state is None:
                    return None
                batch.runs[run_id] = RunState(state.attempt, state.status, state.last_seq)
        return Short(
            batch,
            self.head,
            {k: (s.attempt, s.status.value, s.last_seq) for k, s in batch.runs.items()},
        )


@dataclass(slots=True)
class Short:
    """A group on its way the short way: the batch, and what it was numbered against."""

    batch: Batch
    head: tuple[int, str]
    before: dict[str, tuple[int, str, int]]
    """Each run's (attempt, status, last_seq) as cached: what the database must still hold."""

    async def number(self, ops: Sequence[Operation[Any]]) -> bool:
        """Number, chain and hash `ops`; False if any was refused (the long way then
        decides that, from the rows themselves)."""
        for op in ops:
            await op.run(self.batch)
            if op.refused:
                return False
        return True

    def sent(self) -> Sent:
        """What tells, after a lost connection, whether `send` committed."""
        first = self.batch.added[0]
        return Sent(first.pos, first.hash, self.batch)

    async def send(self, lock_key: int, channel: str) -> None:
        """Write the numbered group in one statement, a transaction of its own. Raises
        SQLSTATE SLSTA (`is_stale`), having written nothing, if the cache was out of date."""
        batch, before = self.batch, self.before
        runs = [
            (run_id, *before[run_id], last_seq, *(ending or (None, None, None)))
            for run_id, last_seq, ending in batch.changed_runs()
        ]
        await batch.conn.execute(
            QUERIES["append_batch"],
            lock_key,
            channel,
            *self.head,
            _rows_json(batch.rows),
            _rows_json(runs),
            batch.now_iso,
        )
        _written(batch)


def _written(batch: Batch) -> None:
    """The batch's rows are in the log: none left to write, and its commit added events."""
    batch.rows = []
    batch.wrote_events = True


async def short_way(
    cache: WriterCache,
    conn: asyncpg.Connection,
    ops: Sequence[Operation[Any]],
    progress: Progress,
    clock: Callable[[], float],
    lock_key: int,
    channel: str,
) -> Batch | None:
    """The group in one statement, numbered against `cache`; None when it has to go the
    long way (the cache cannot serve it, an append would be refused, or the database
    found the cache out of date: nothing was written then).

    A lost connection leaves the outcome unknown: raised as `InDoubt`.
    """
    short = cache.batch_for(conn, ops)
    if short is None:
        return None
    short.batch.set_time(clock())
    progress.stage = "applying"
    if not await short.number(ops):
        return None
    try:
        await short.send(lock_key, channel)
    except Exception as exc:
        if is_stale(exc):
            cache.forget()
            return None
        if is_connection_error(exc):
            raise InDoubt(short.sent(), exc) from exc
        raise  # refused by the server: certainly not committed
    return short.batch
