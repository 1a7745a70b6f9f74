"""The storage contract: what every backend (SQLite, PostgreSQL) provides.

Kept small on purpose (procrastinate's `connector.py` is the model): the worker,
the stream and the CLI only ever talk to an `EventLog`, so a backend passes one
shared contract suite and cannot drift.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

from storage.errors import SteplogError
from storage.model import Event, NewEvent, Run

CommitListener = Callable[[int], None]
"""Called in the writer's event loop after a commit, with the new head `pos`."""

CommitObserver = Callable[[Sequence[Event], Sequence[float]], None]
"""Called in the writer's event loop after each commit made by *this* log instance, with
the events that commit added (every type, in `pos` order) and, for each `append()` it
acknowledged, the seconds from the call to the commit. For metrics and logs: it must be
quick and must not raise (a failure is logged and ignored)."""

WorkListener = Callable[[], None]
"""Called in the log's event loop when a commit may have made a run claimable (a run was
created or a lease given back), by this process or, where the backend can tell, another."""


class EventLog(abc.ABC):
    """An append-only, hash-chained event log plus the run records it projects."""

    # -- lifecycle -------------------------------------------------------------
    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, migrate the schema and start the writer."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish pending writes and release connections."""

    # -- runs ------------------------------------------------------------------
    @abc.abstractmethod
    async def create_run(
        self,
        function: str,
        params: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        max_attempts: int = 3,
        fingerprint: str | None = None,
    ) -> tuple[Run, bool]:
        """Insert a queued run and its `run.queued` event in one transaction.

        `fingerprint` is the request's idempotency fingerprint when the caller takes it
        itself (`storage.writer.idempotency.fingerprint`, over params before they were
        transformed for storage); by default it is taken over `params`.

        Returns `(run, created)`; with an idempotency key already used by the same
        request (same function, same params in any key order), the existing run and
        `False` (never a second run). The same key with another function or other
        params raises `IdempotencyConflict` and writes nothing (storage/writer/idempotency.py).
        The run comes from the transaction itself, not from a read after it.
        """

    @abc.abstractmethod
    async def get_run(self, run_id: str) -> Run:
        """Return the run or raise `RunNotFound`."""

    @abc.abstractmethod
    async def list_runs(
        self,
        *,
        status: str | None = None,
        function: str | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> list[Run]:
        """Newest first; `before` is a run id to page from."""

    @abc.abstractmethod
    async def claim_run(
        self, worker_id: str, lease_seconds: float, functions: Sequence[str]
    ) -> Run | None:
        """Lease the oldest queued run, or a running one whose lease expired.

        A reclaimed run gets `attempt + 1` and a `run.retrying` event; a run out
        of attempts is failed instead. The claim and its events commit together,
        and the run returned is read by the claim's own statement (no read after the
        commit that could fail). When the claim fails its caller, a lease it may have
        committed is given back at once, so the run never waits for it to expire.
        """

    @abc.abstractmethod
    async def heartbeat(
        self, run_id: str, attempt: int, worker_id: str, lease_seconds: float
    ) -> None:
        """Extend the lease, or raise `LeaseLost` when another attempt owns the run."""

    @abc.abstractmethod
    async def release(self, run_id: str, attempt: int, worker_id: str) -> None:
        """Give the lease back at once so another worker can take the run."""

    @abc.abstractmethod
    async def retry_later(
        self, run_id: str, attempt: int, delay: float, error: str, *, refund: bool = False
    ) -> None:
        """Write `run.retrying` and queue the run again, claimable after `delay` seconds.

        Fenced by attempt like `append`; the next claim starts `attempt + 1`. `refund`:
        the attempt does not count (the storage failed it, e.g. a full disk), so the
        run's `max_attempts` grows by one.
        """

    @abc.abstractmethod
    async def cancel_run(self, run_id: str, reason: str) -> bool:
        """End a queued or running run with `run.cancelled` at once.

        Its worker notices on its next heartbeat (its writes are refused from
        now on) and stops. Returns False when the run had already ended.
        """

    # -- events ----------------------------------------------------------------
    @abc.abstractmethod
    async def append(self, event: NewEvent) -> Event:
        """Commit one event (group-committed with concurrent appends).

        Fenced by attempt: refused with `LeaseLost` when the run's current
        attempt differs, `RunFinished` when the run has ended. A terminal event
        also ends the run record in the same transaction (`result` / `error`
        come from the event's data).
        """

    @abc.abstractmethod
    async def read_run(self, run_id: str, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        """Events of one run with `seq > after_seq`, in order."""

    async def read_run_envelopes(
        self, run_id: str, after_seq: int = 0, limit: int = 1000
    ) -> list[tuple[int, str, str]]:
        """Like `read_run`, as (seq, type, envelope JSON): what a replay writes.

        A backend may build the envelopes in SQL, off the event loop; this default
        builds them in Python. Both must give the same JSON (contract suite).
        """
        from storage.envelope import envelope

        return [(e.seq, e.type, envelope(e)) for e in await self.read_run(run_id, after_seq, limit)]

    @abc.abstractmethod
    async def read_all(self, after_pos: int = 0, limit: int = 1000) -> list[Event]:
        """Events of every run with `pos > after_pos`, in commit order."""

    @abc.abstractmethod
    async def head(self) -> int:
        """The highest committed `pos` (0 for an empty log)."""

    @abc.abstractmethod
    async def secret(self, name: str) -> bytes:
        """A random per-log secret (created on first use), e.g. to sign run tokens."""

    @abc.abstractmethod
    async def rotate_secret(self, name: str) -> bytes:
        """Replace the secret `name` with a new random one and return it.

        What was signed with the old one (run tokens) stops verifying everywhere
        the secret is read again (`secret`).
        """

    # -- wake-ups --------------------------------------------------------------
    @abc.abstractmethod
    def add_commit_listener(self, listener: CommitListener) -> None:
        """Be told after each commit in this process (commit, then notify)."""

    @abc.abstractmethod
    def remove_commit_listener(self, listener: CommitListener) -> None:
        """Stop being told."""

    def add_work_listener(self, listener: WorkListener) -> None:
        """Be told when a commit may have made a run claimable (idle workers claim now).

        A backend that cannot tell does nothing: its workers find runs by polling.
        """
        return None

    def remove_work_listener(self, listener: WorkListener) -> None:
        """Stop being told."""
        return None

    # -- operations: health checks and metrics ---------------------------------

    @abc.abstractmethod
    async def run_counts(self) -> dict[str, int]:
        """How many runs are in each status (`RunStatus` values; absent means none).

        One cheap aggregate read, made at every `/metrics` scrape.
        """

    def storage_state(self) -> tuple[SteplogError | None, str]:
        """What the storage's free space allows now, for `/readyz`: a `StorageFull` or
        `StorageLow` (new runs refused) or None, and a line saying why. Cheap: no I/O.
        A backend that does not watch its space says so."""
        return None, "not watched by this backend"

    @abc.abstractmethod
    async def check_writable(self) -> None:
        """Prove the log takes a write now, or raise.

        Goes through the same writer as appends (so a stuck writer, a locked or
        read-only database, a full disk all fail it) and commits a tiny write that
        touches no run or event: both backends upsert the `meta` row `probe:writable`
        (on PostgreSQL under the append lock, so a peer stuck holding it fails it too).
        `/readyz` calls it with a deadline.
        """

    @abc.abstractmethod
    def add_commit_observer(self, observer: CommitObserver) -> None:
        """Be told what each commit made by this instance added (see `CommitObserver`).

        Unlike commit listeners, observers see the events themselves and the append
        latencies, but only for writes made through this instance: the events appended
        counter, the append latency histogram and the run-transition log lines are
        counted once, by the process that wrote them.
        """

    @abc.abstractmethod
    def remove_commit_observer(self, observer: CommitObserver) -> None:
        """Stop being told."""
