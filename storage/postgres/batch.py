"""One group-commit transaction on PostgreSQL: the state every operation in it shares.

The rules are the SQLite backend's, shared in storage/numbering.py, so both
pass one contract suite: appends are validated (fencing), numbered and hashed
in Python against the locked rows of the runs they touch, then written with one
`unnest` INSERT per flush, so a batch of N appends costs a handful of round
trips, not N.

What PostgreSQL adds is concurrency between processes. `start` takes the
append lock (see log.py), reads the chain head, and locks every run the batch
appends to with `SELECT … FOR UPDATE` (the per-run lock): seq is
`last_seq + 1` of a locked row, so a run's seq has no gap and no reordering
whoever writes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import asyncpg

from storage.errors import InvalidEvent, SteplogError
from storage.model import RunStatus
from storage.numbering import Numbering, RunState
from storage.postgres.errors import is_connection_error, translate
from storage.sqlfiles import POSTGRES as QUERIES
from storage.writer.writes import Pending

T = TypeVar("T")


class Operation(Pending[T]):
    """A write the PostgreSQL writer applies inside a batch, on the event loop."""

    def check_text(self, field: str, value: str | None) -> None:
        """PostgreSQL text cannot hold NUL: refused when the request is built, so it fails
        only its caller. (Text a worker hands over is made storable instead: see
        `storage.writer.validate.storable`.)"""
        if value is not None and "\x00" in value:
            raise InvalidEvent(f"{field} contains NUL (U+0000), which PostgreSQL text cannot hold")

    async def apply(self, batch: Batch) -> T:
        raise NotImplementedError

    async def run(self, batch: Batch) -> None:
        self._error = None  # a batch may run twice (see PostgresEventLog._run_batch)
        try:
            self._result = await self.apply(batch)
        except SteplogError as exc:  # refused (fenced, unknown run): only this caller fails
            self._error = exc

    @property
    def refused(self) -> bool:
        """This operation failed on its own in the last `run` (the others may commit)."""
        return self._error is not None

    def fail(self, exc: BaseException) -> None:
        """The whole transaction is gone: tell the caller."""
        if not self.future.done():
            self.future.set_exception(exc)


class Batch(Numbering):
    """The shared state of one write transaction.

    Its clock is set once the append lock is held (`set_time`), so `at`
    follows commit order closely.
    """

    def __init__(self, conn: asyncpg.Connection) -> None:
        super().__init__(0.0)
        self.conn = conn

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
        return self.known_run(run_id)

    async def apply(self, op: Operation[Any]) -> None:
        if not op.appends:
            # Anything that reads or writes tables directly sees earlier appends first.
            await self.flush()
        await op.run(self)

    async def apply_alone(self, op: Operation[Any], run_ids: Iterable[str]) -> Exception | None:
        """Apply `op` and write what it added, in a savepoint of its own: should it fail,
        for whatever reason, its writes are undone and only its caller is told.
        Returns how it failed (None when it did not). A lost connection is not the
        operation's fault: it ends the whole transaction (raised).

        `run_ids` are the runs the batch appends to, read (and locked) again after
        a failure.
        """
        mark = self.mark()
        await self.conn.execute(QUERIES["savepoint"])
        try:
            await op.run(self)
            await self.flush()
        except Exception as exc:
            if is_connection_error(exc):
                raise
            await self.conn.execute(QUERIES["undo_savepoint"])
            self.back_to(mark)
            await self.load_runs(run_ids)
            error = translate(exc)
            op.refuse(error)
            return error
        await self.conn.execute(QUERIES["release_savepoint"])
        return None

    async def flush(self) -> None:
        """Write the events and run projections added since the last flush (one statement)."""
        if not self.rows:
            return
        runs = [
            (run_id, last_seq, *(ending or (None, None, None)))
            for run_id, last_seq, ending in self.changed_runs()
        ]
        await self.conn.execute(
            QUERIES["write_batch"], *_columns(self.rows, 11), *_columns(runs, 5), self.now_iso
        )
        self.rows = []
        self.wrote_events = True


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows to the column arrays `unnest` takes."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width
