"""One group-commit transaction on PostgreSQL: the state every operation in it shares.

The rules are the SQLite backend's (storage/sqlite/batch.py) so both pass one
contract suite: appends are validated (fencing), numbered and hashed in Python
against the locked rows of the runs they touch, then written with one
`unnest` INSERT per flush, so a batch of N appends costs a handful of round
trips, not N.

What PostgreSQL adds is concurrency between processes. `start` takes the
append lock (see log.py), reads the chain head, and locks every run the batch
appends to with `SELECT … FOR UPDATE` (the per-run lock): seq is
`last_seq + 1` of a locked row, so a run's seq has no gap and no reordering
whoever writes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg

from storage import chain
from storage.errors import InvalidEvent, LeaseLost, RunFinished, RunNotFound, SteplogError
from storage.jsonenc import dumps
from storage.model import EVENT_TYPES, STATUS_OF_TERMINAL, Event, NewEvent, RunStatus
from storage.postgres.queries import QUERIES
from storage.timefmt import iso

T = TypeVar("T")


class Operation(Generic[T]):
    """A write queued for the writer; its future resolves only after the commit."""

    # Whether it runs statements of its own (which must see the batch's earlier
    # appends, so those are flushed first); plain appends only add rows in memory.
    touches_tables = True

    def __init__(self) -> None:
        self.future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._result: T | None = None
        self._error: SteplogError | None = None

    async def apply(self, batch: Batch) -> T:
        raise NotImplementedError

    async def run(self, batch: Batch) -> None:
        self._error = None  # a batch may run twice (see PostgresEventLog._run_batch)
        try:
            self._result = await self.apply(batch)
        except SteplogError as exc:  # refused (fenced, unknown run): only this caller fails
            self._error = exc

    def settle(self) -> None:
        """Resolve the caller's future; called once the transaction committed."""
        if self.future.done():
            return
        if self._error is not None:
            self.future.set_exception(self._error)
        else:
            self.future.set_result(self._result)  # type: ignore[arg-type]

    def fail(self, exc: BaseException) -> None:
        """The whole transaction is gone: tell the caller."""
        if not self.future.done():
            self.future.set_exception(exc)


@dataclass(slots=True)
class RunState:
    """What fencing and seq assignment need to know about a locked run, inside the batch."""

    attempt: int
    status: RunStatus
    last_seq: int
    dirty: bool = False
    ended: tuple[str, str | None, str | None] | None = None  # (status, result, error)


class Batch:
    """The shared state of one write transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.now = 0.0
        self.now_iso = iso(0.0)
        self.runs: dict[str, RunState] = {}
        self.rows: list[tuple[Any, ...]] = []
        self.head_pos = 0
        self.head_hash = chain.GENESIS_HASH
        self.wrote_events = False
        self.added: list[Event] = []
        """Every event this transaction adds, in `pos` order: what the commit observers see."""

    def set_time(self, now: float) -> None:
        """The batch's clock reading: every `at`, lease and back-off in it uses this."""
        self.now, self.now_iso = now, iso(now)

    async def start(self, lock_key: int, appends: Iterable[Any]) -> None:
        """Take the append lock, read the chain head, lock the runs appended to.

        One round trip (`steplog_lock_for_append`). Once the lock is held the
        head read here stays the head until this transaction ends.
        """
        run_ids = sorted({op.event.run_id for op in appends})
        for row in await self.conn.fetch(QUERIES["lock_for_append"], lock_key, run_ids):
            if row["pos"] is not None:
                self.head_pos, self.head_hash = row["pos"], row["hash"]
            if row["id"] is not None:
                self.runs[row["id"]] = RunState(
                    row["attempt"], RunStatus(row["status"]), row["last_seq"]
                )

    async def load_runs(self, run_ids: Iterable[str]) -> None:
        missing = sorted(run_id for run_id in set(run_ids) if run_id not in self.runs)
        if not missing:
            return
        for run_id, attempt, status, last_seq in await self.conn.fetch(
            QUERIES["lock_runs"], missing
        ):
            self.runs[run_id] = RunState(attempt, RunStatus(status), last_seq)

    async def run_state(self, run_id: str) -> RunState:
        await self.load_runs([run_id])
        state = self.runs.get(run_id)
        if state is None:
            raise RunNotFound(f"no run with id {run_id!r}")
        return state

    async def apply(self, op: Operation[Any]) -> None:
        if op.touches_tables:
            # Anything that reads or writes tables directly sees earlier appends first.
            await self.flush()
        await op.run(self)

    def add_event(self, new: NewEvent, data: str | None = None) -> Event:
        """Validate (fencing), number and hash one event; it is written at `flush`.

        `data` is `new.data` already encoded, when the caller did it before the
        lock was taken (every microsecond under the append lock is shared by all).
        """
        if new.type not in EVENT_TYPES:
            raise InvalidEvent(f"unknown event type {new.type!r}")
        if "\x00" in (new.step or "") or "\x00" in (new.message or ""):
            # PostgreSQL text cannot hold NUL; failing here fails only this append,
            # where the INSERT failing would fail the whole group commit.
            raise InvalidEvent("step and message cannot contain NUL characters")
        state = self.runs.get(new.run_id)
        if state is None:
            raise RunNotFound(f"no run with id {new.run_id!r}")
        if state.status.finished:
            raise RunFinished(f"run {new.run_id} has already {state.status.value}")
        if new.attempt != state.attempt:
            raise LeaseLost(
                f"run {new.run_id} is on attempt {state.attempt}; "
                f"writes from attempt {new.attempt} are refused"
            )
        seq = state.last_seq + 1
        pos = self.head_pos + 1
        data = dumps(new.data) if data is None else data
        pct = None if new.pct is None else round(float(new.pct), 2)
        row = (pos, new.run_id, seq, new.type, new.step, new.message, pct, data, new.attempt,
               self.now_iso)  # fmt: skip
        digest = chain.link(self.head_hash, chain.canonical_row(*row))
        self.rows.append((*row, digest))
        event = Event(*row, digest)
        self.added.append(event)
        self.head_pos, self.head_hash = pos, digest
        state.last_seq = seq
        state.dirty = True
        ended = STATUS_OF_TERMINAL.get(new.type)
        if ended is not None:
            state.status = ended
            payload = new.data if isinstance(new.data, dict) else {}
            result = dumps(payload["result"]) if "result" in payload else None
            error = payload.get("error") or (new.message if ended != RunStatus.SUCCEEDED else None)
            state.ended = (ended.value, result, None if error is None else str(error))
        return event

    async def flush(self) -> None:
        """Write the events and run projections added since the last flush (one statement)."""
        if not self.rows:
            return
        runs: list[tuple[str, int, str | None, str | None, str | None]] = []
        for run_id, state in self.runs.items():
            if not state.dirty:
                continue
            status, result, error = state.ended or (None, None, None)
            runs.append((run_id, state.last_seq, status, result, error))
            state.dirty, state.ended = False, None
        await self.conn.execute(
            QUERIES["write_batch"], *_columns(self.rows, 11), *_columns(runs, 5), self.now_iso
        )
        self.rows = []
        self.wrote_events = True


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows to the column arrays `unnest` takes."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width
