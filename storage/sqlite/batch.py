"""One group-commit transaction: the state every operation in it shares.

Appends are validated and hashed in Python against an in-memory view of the
runs they touch (storage/numbering.py, shared with PostgreSQL), then written
with one `executemany`: a batch of N appends costs a handful of round trips
to the SQLite thread, not N.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from storage import chain
from storage.errors import SteplogError
from storage.model import RunStatus
from storage.numbering import Numbering, RunState
from storage.sqlfiles import SQLITE as Q
from storage.sqlite.errors import is_disk_full
from storage.writer.writes import Pending

T = TypeVar("T")


class Operation(Pending[T]):
    """A write the SQLite writer applies inside a batch, on the writer thread."""

    def apply(self, batch: Batch) -> T:
        raise NotImplementedError

    def run(self, batch: Batch) -> None:
        self._error = None  # a batch may run twice (see SQLiteEventLog._run_batch)
        try:
            self._result = self.apply(batch)
        except SteplogError as exc:  # refused (fenced, unknown run): only this caller fails
            self._error = exc

    def fail(self, exc: Exception) -> None:
        """The transaction rolled back: the caller gets `exc` (set, on the loop, by `settle`)."""
        self.refuse(exc)


class Known:
    """What the writer knows after its last commit, to skip re-reading it next time.

    The chain head and the states of the runs being appended to are read at the
    start of every transaction; with a few dozen appends per transaction, those
    reads cost as much as the appends. They can be kept between transactions
    because this connection is the process's only writer and SQLite's
    `PRAGMA data_version` changes exactly when another connection (another
    process) has committed: then everything is read again.

    Run states are kept only across transactions of plain appends, which keep
    them exact (`Batch.add_event`, `Batch.flush`); any other operation updates
    `runs` with SQL, so after one the runs are read again. Finished runs are
    dropped, and the whole map when it grows past `MAX_RUNS`.
    """

    MAX_RUNS = 4096

    def __init__(self, version: int, head_pos: int, head_hash: str, runs: dict[str, RunState]):
        self.version = version
        self.head_pos = head_pos
        self.head_hash = head_hash
        self.runs = runs

    @classmethod
    def after(cls, batch: Batch, only_appends: bool) -> Known:
        """What to keep once `batch` has committed."""
        runs: dict[str, RunState] = {}
        if only_appends and len(batch.runs) <= cls.MAX_RUNS:
            runs = {k: v for k, v in batch.runs.items() if not v.status.finished}
        # Our own commit leaves data_version as `start` read it inside the transaction.
        return cls(batch.version, batch.head_pos, batch.head_hash, runs)


def data_version(conn: sqlite3.Connection) -> int:
    """Changes whenever another connection commits to the database (never for our own)."""
    version: int = conn.execute("PRAGMA data_version").fetchone()[0]
    return version


class Batch(Numbering):
    """The shared state of one `BEGIN IMMEDIATE` … `COMMIT`.

    Appends are validated, numbered and hashed by `Numbering.add_event`
    (inherited, not wrapped: it is on every append's path).
    """

    def __init__(self, conn: sqlite3.Connection, clock: Callable[[], float]) -> None:
        super().__init__(clock())
        self.conn = conn
        self.version = 0
        """`PRAGMA data_version` as this transaction began (read once, by `start`)."""

    def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return self.conn.execute(sql, args).fetchall()

    def start(self, appends: Iterable[Any], known: Known | None = None) -> None:
        """Read the chain head and every run the queued appends touch.

        `known` is what the previous transaction of this connection left behind
        (see `Known`): when nothing else wrote since, the head and the run states
        come from it and only runs it does not know are read.
        """
        self.version = data_version(self.conn)
        if known is not None and known.version == self.version:
            self.head_pos, self.head_hash, self.runs = known.head_pos, known.head_hash, known.runs
        else:
            cur = self.conn.execute(Q["assigned_high"])
            row = cur.fetchone()
            self.head_pos = int(row[0]) if row else 0
            cur = self.conn.execute(Q["head_hash"])
            row = cur.fetchone()
            self.head_hash = row[0] if row else chain.GENESIS_HASH
        self.load_runs({op.event.run_id for op in appends})

    def load_runs(self, run_ids: Iterable[str]) -> None:
        missing = [run_id for run_id in run_ids if run_id not in self.runs]
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.fetchall(Q["load_runs"].format(marks=marks), chunk)
            for run_id, attempt, status, last_seq in rows:
                self.runs[run_id] = RunState(attempt, RunStatus(status), last_seq)

    def run_state(self, run_id: str) -> RunState:
        self.load_runs([run_id])
        return self.known_run(run_id)

    def apply(self, op: Operation[Any]) -> None:
        if not op.appends:
            # Anything that reads or writes tables directly sees earlier appends first.
            self.flush()
        op.run(self)

    def apply_alone(self, op: Operation[Any], run_ids: Iterable[str]) -> Exception | None:
        """Apply `op` and write what it added, in a savepoint of its own: should it fail,
        for whatever reason, its writes are undone and only its caller is told.
        Returns how it failed (None when it did not).

        `run_ids` are the runs the batch appends to, read again after a failure.
        """
        mark = self.mark()
        self.conn.execute(Q["savepoint"])
        try:
            op.run(self)
            self.flush()
        except Exception as exc:
            if is_disk_full(exc):
                raise  # not this operation's fault: the whole transaction cannot commit
            self.conn.execute(Q["rollback_to_savepoint"])
            self.conn.execute(Q["release_savepoint"])
            self.back_to(mark)
            self.load_runs(run_ids)
            op.refuse(exc)
            return exc
        self.conn.execute(Q["release_savepoint"])
        return None

    def flush(self) -> None:
        """Write the events and run projections added since the last flush."""
        if not self.rows:
            return
        self.conn.executemany(Q["insert_events"], self.rows)
        self.rows = []
        self.wrote_events = True
        progressed, ended = [], []
        for run_id, last_seq, ending in self.changed_runs():
            progressed.append((last_seq, self.now_iso, run_id))
            if ending is not None:
                status, result, error = ending
                ended.append((status, self.now_iso, result, error, run_id))
        self.conn.executemany(Q["run_progressed"], progressed)
        if ended:
            self.conn.executemany(Q["run_ended"], ended)
