"""One group-commit transaction: the state every operation in it shares.

Appends are validated and hashed in Python against an in-memory view of the
runs they touch, then written with one `executemany`: a batch of N appends
costs a handful of round trips to the SQLite thread, not N.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from storage import chain
from storage.errors import InvalidEvent, LeaseLost, RunFinished, RunNotFound, SteplogError
from storage.jsonenc import dumps
from storage.model import EVENT_TYPES, STATUS_OF_TERMINAL, Event, NewEvent, RunStatus
from storage.timefmt import iso

T = TypeVar("T")


class Operation(Generic[T]):
    """A write queued for the writer; its future resolves only after the commit."""

    appends = False
    """True for a plain event append, which a batch numbers and writes with the others."""

    def __init__(self) -> None:
        self.future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._result: T | None = None
        self._error: Exception | None = None

    def apply(self, batch: Batch) -> T:
        raise NotImplementedError

    def run(self, batch: Batch) -> None:
        try:
            self._result = self.apply(batch)
        except SteplogError as exc:  # refused (fenced, unknown run): only this caller fails
            self._error = exc

    def fail(self, exc: Exception) -> None:
        """The transaction rolled back: the caller gets `exc` (set, on the loop, by `settle`)."""
        self._result = None
        self._error = exc  # type: ignore[assignment]

    def settle(self) -> None:
        """Resolve the caller's future; called once the transaction committed."""
        if self.future.done():
            return
        if self._error is not None:
            self.future.set_exception(self._error)
        else:
            self.future.set_result(self._result)  # type: ignore[arg-type]


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
        return cls(data_version(batch.conn), batch.head_pos, batch.head_hash, runs)

    def still_valid(self, conn: sqlite3.Connection) -> bool:
        return data_version(conn) == self.version


def data_version(conn: sqlite3.Connection) -> int:
    """Changes whenever another connection commits to the database (never for our own)."""
    version: int = conn.execute("PRAGMA data_version").fetchone()[0]
    return version


@dataclass(slots=True)
class RunState:
    """What fencing and seq assignment need to know about a run, inside the batch."""

    attempt: int
    status: RunStatus
    last_seq: int
    dirty: bool = False
    ended: tuple[str, str | None, str | None] | None = None  # (status, result, error)


class Batch:
    """The shared state of one `BEGIN IMMEDIATE` … `COMMIT`."""

    def __init__(self, conn: sqlite3.Connection, clock: Callable[[], float]) -> None:
        self.conn = conn
        self.clock = clock
        self.runs: dict[str, RunState] = {}
        self.rows: list[tuple[Any, ...]] = []
        self.head_pos = 0
        self.head_hash = chain.GENESIS_HASH
        self.wrote_events = False
        self.added: list[Event] = []  # every event this transaction adds, for observers
        self.now = clock()
        self.now_iso = iso(self.now)

    def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return self.conn.execute(sql, args).fetchall()

    def start(self, appends: Iterable[Any], known: Known | None = None) -> None:
        """Read the chain head and every run the queued appends touch.

        `known` is what the previous transaction of this connection left behind
        (see `Known`): when nothing else wrote since, the head and the run states
        come from it and only runs it does not know are read.
        """
        if known is not None and known.still_valid(self.conn):
            self.head_pos, self.head_hash, self.runs = known.head_pos, known.head_hash, known.runs
        else:
            cur = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
            row = cur.fetchone()
            self.head_pos = int(row[0]) if row else 0
            cur = self.conn.execute("SELECT hash FROM events ORDER BY pos DESC LIMIT 1")
            row = cur.fetchone()
            self.head_hash = row[0] if row else chain.GENESIS_HASH
        self.load_runs({op.event.run_id for op in appends})

    def load_runs(self, run_ids: Iterable[str]) -> None:
        missing = [run_id for run_id in run_ids if run_id not in self.runs]
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.fetchall(
                f"SELECT id, attempt, status, last_seq FROM runs WHERE id IN ({marks})", chunk
            )
            for run_id, attempt, status, last_seq in rows:
                self.runs[run_id] = RunState(attempt, RunStatus(status), last_seq)

    def run_state(self, run_id: str) -> RunState:
        self.load_runs([run_id])
        state = self.runs.get(run_id)
        if state is None:
            raise RunNotFound(f"no run with id {run_id!r}")
        return state

    def apply(self, op: Operation[Any]) -> None:
        if not op.appends:
            # Anything that reads or writes tables directly sees earlier appends first.
            self.flush()
        op.run(self)

    def add_event(self, new: NewEvent) -> Event:
        """Validate (fencing), number and hash one event; it is written at `flush`."""
        if new.type not in EVENT_TYPES:
            raise InvalidEvent(f"unknown event type {new.type!r}")
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
        data = dumps(new.data)
        pct = None if new.pct is None else round(float(new.pct), 2)
        canonical = chain.canonical_row(
            pos,
            new.run_id,
            seq,
            new.type,
            new.step,
            new.message,
            pct,
            data,
            new.attempt,
            self.now_iso,
        )
        digest = chain.link(self.head_hash, canonical)
        event = Event(
            pos,
            new.run_id,
            seq,
            new.type,
            new.step,
            new.message,
            pct,
            data,
            new.attempt,
            self.now_iso,
            digest,
        )
        self.rows.append(
            (pos, new.run_id, seq, new.type, new.step, new.message, pct, data, new.attempt,
             self.now_iso, digest)
        )  # fmt: skip
        self.head_pos, self.head_hash = pos, digest
        self.added.append(event)
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

    def flush(self) -> None:
        """Write the events and run projections added since the last flush."""
        if not self.rows:
            return
        self.conn.executemany(
            "INSERT INTO events (pos, run_id, seq, type, step, message, pct, data, attempt, at,"
            " hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            self.rows,
        )
        self.rows = []
        self.wrote_events = True
        progressed, ended = [], []
        for run_id, state in self.runs.items():
            if not state.dirty:
                continue
            state.dirty = False
            progressed.append((state.last_seq, self.now_iso, run_id))
            if state.ended is not None:
                status, result, error = state.ended
                ended.append((status, self.now_iso, result, error, run_id))
                state.ended = None
        self.conn.executemany(
            "UPDATE runs SET last_seq = ?, updated_at = ? WHERE id = ?", progressed
        )
        if ended:
            self.conn.executemany(
                "UPDATE runs SET status = ?, finished_at = ?, result = ?, error = ?,"
                " lease_owner = NULL, lease_expires_at = NULL WHERE id = ?",
                ended,
            )
