"""The part of an event log above its single writer, the same for every backend.

Both backends take writes the same way: a caller queues an operation for the
log's one writer task and awaits its future, which resolves once the
transaction that applied it has committed (storage/writer/commits.py takes the
groups, storage/writer/writes.py defines the requests). Only the operation classes
(how each write is done: storage/sqlite/operations.py,
storage/postgres/operations.py) and the reads differ, so the write methods,
the listener and observer lists and the queue live here once, and a backend
names its operations module in `ops`, which must provide every class of
`Operations` (mypy checks the module against that protocol).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

from storage.errors import RunNotFound, SteplogError, StorageClosed, StorageLow
from storage.interface import CommitListener, CommitObserver, EventLog, WorkListener
from storage.model import Event, NewEvent, Run
from storage.writer.writes import (
    Append,
    Cancel,
    Claim,
    CreateRun,
    Heartbeat,
    Pending,
    Release,
    RetryLater,
    Secret,
)

log = logging.getLogger("steplog.storage")

GIVE_BACK_TRIES = 3


class _Stop(Pending[None]):
    """The marker `close` queues behind the last write: never applied, never awaited."""

    def __init__(self) -> None:
        pass


STOP: Pending[Any] = _Stop()


class Operations(Protocol):
    """The operation classes a backend provides (its `operations` module): each one a
    write request of storage/writer/writes.py with the backend's `apply`."""

    # Read-only (properties), so that a subclass of each request satisfies its type.
    @property
    def AppendOp(self) -> type[Append]: ...
    @property
    def CreateRunOp(self) -> type[CreateRun]: ...
    @property
    def ClaimOp(self) -> type[Claim]: ...
    @property
    def HeartbeatOp(self) -> type[Heartbeat]: ...
    @property
    def ReleaseOp(self) -> type[Release]: ...
    @property
    def RetryLaterOp(self) -> type[RetryLater]: ...
    @property
    def CancelOp(self) -> type[Cancel]: ...
    @property
    def SecretOp(self) -> type[Secret]: ...
    @property
    def ProbeOp(self) -> Callable[[], Pending[None]]:
        """A write that touches no run or event (`check_writable`)."""


class QueuedLog(EventLog):
    """An `EventLog` whose writes go through one queue to one writer task."""

    ops: ClassVar[Operations]
    """The backend's operations module (see `Operations`)."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self._listeners: list[CommitListener] = []
        self._observers: list[CommitObserver] = []
        self._work_listeners: list[WorkListener] = []
        self._closed = True

    # -- the queue -------------------------------------------------------------
    async def _submit(self, op: Pending[Any]) -> Any:
        if self._closed:
            raise StorageClosed()
        self._queue.put_nowait(op)
        return await op.future

    async def _stop_writer(self) -> None:
        """Let the writer commit everything queued before this call, then end it."""
        if self._writer_task is not None:
            await self._queue.put(STOP)
            await self._writer_task

    # -- reads a backend provides for the writes below ---------------------------
    @abc.abstractmethod
    async def _claimable(self, functions: Sequence[str]) -> bool:
        """Whether a run of `functions` could be claimed now (one cheap read)."""

    @abc.abstractmethod
    async def _stored_secret(self, key: str) -> bytes | None:
        """The `meta` value under `key`, if there is one."""

    @abc.abstractmethod
    async def _find_run(self, run_id: str) -> Run | None:
        """The run `run_id`, or None when there is none."""

    async def get_run(self, run_id: str) -> Run:
        run = await self._find_run(run_id)
        if run is None:
            raise RunNotFound(f"no run with id {run_id!r}")
        return run

    @abc.abstractmethod
    async def _runs_page(
        self, status: str | None, function: str | None, before: str | None, limit: int
    ) -> list[Run]:
        """`list_runs`, with an empty status or function filter given as None."""

    async def list_runs(
        self,
        *,
        status: str | None = None,
        function: str | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> list[Run]:
        return await self._runs_page(status or None, function or None, before, limit)

    # -- writes ----------------------------------------------------------------
    async def create_run(
        self,
        function: str,
        params: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        max_attempts: int = 3,
        fingerprint: str | None = None,
    ) -> tuple[Run, bool]:
        problem, _ = self.storage_state()
        if isinstance(problem, StorageLow):
            # Below the floor the space left is kept for the runs already accepted.
            raise problem
        created: tuple[Run, bool] = await self._submit(
            self.ops.CreateRunOp(function, params, idempotency_key, max_attempts, fingerprint)
        )
        return created

    async def claim_run(
        self, worker_id: str, lease_seconds: float, functions: Sequence[str]
    ) -> Run | None:
        if not functions or not await self._claimable(functions):
            return None  # idle workers poll with a cheap read, not a write transaction
        claim = self.ops.ClaimOp(worker_id, lease_seconds, tuple(functions))
        try:
            run: Run | None = await self._submit(claim)
        except Exception:
            # The claim may have committed although we cannot tell (the connection died
            # during COMMIT): give the lease back, or nobody runs the run until it expires.
            if claim.leased is not None:
                await self._give_back(worker_id, *claim.leased)
            raise
        return run

    async def _give_back(self, worker_id: str, run_id: str, attempt: int) -> None:
        """Release a lease whose claim failed; a no-op when the claim did not commit
        (the release is fenced by attempt and owner). Tried a few times: it is what keeps
        the run from waiting out its lease."""
        for tries in range(1, GIVE_BACK_TRIES + 1):
            try:
                await self._submit(self.ops.ReleaseOp(run_id, attempt, worker_id))
                return
            except StorageClosed:
                return
            except SteplogError as exc:
                if tries == GIVE_BACK_TRIES:
                    log.warning("giving back the lease of run %s failed: %s", run_id, exc)

    async def heartbeat(
        self, run_id: str, attempt: int, worker_id: str, lease_seconds: float
    ) -> None:
        await self._submit(self.ops.HeartbeatOp(run_id, attempt, worker_id, lease_seconds))

    async def release(self, run_id: str, attempt: int, worker_id: str) -> None:
        await self._submit(self.ops.ReleaseOp(run_id, attempt, worker_id))

    async def retry_later(
        self, run_id: str, attempt: int, delay: float, error: str, *, refund: bool = False
    ) -> None:
        await self._submit(self.ops.RetryLaterOp(run_id, attempt, delay, error, refund=refund))

    async def cancel_run(self, run_id: str, reason: str) -> bool:
        cancelled: bool = await self._submit(self.ops.CancelOp(run_id, reason))
        return cancelled

    async def append(self, event: NewEvent) -> Event:
        result: Event = await self._submit(self.ops.AppendOp(event))
        return result

    async def secret(self, name: str) -> bytes:
        key = f"secret:{name}"
        stored = await self._stored_secret(key)
        if stored is not None:
            return stored
        # Two processes may race to create it: the write keeps whichever came first.
        value: bytes = await self._submit(self.ops.SecretOp(key, secrets.token_bytes(32)))
        return value

    async def rotate_secret(self, name: str) -> bytes:
        key = f"secret:{name}"
        value: bytes = await self._submit(
            self.ops.SecretOp(key, secrets.token_bytes(32), replace=True)
        )
        return value

    async def check_writable(self) -> None:
        """Commit a `ProbeOp` through the writer: everything an append needs must take it."""
        await self._submit(self.ops.ProbeOp())

    # -- wake-ups --------------------------------------------------------------
    def add_commit_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    def remove_commit_listener(self, listener: CommitListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def add_commit_observer(self, observer: CommitObserver) -> None:
        """Be told what each commit of *this* writer added (other processes count theirs)."""
        self._observers.append(observer)

    def remove_commit_observer(self, observer: CommitObserver) -> None:
        with contextlib.suppress(ValueError):
            self._observers.remove(observer)

    def add_work_listener(self, listener: WorkListener) -> None:
        self._work_listeners.append(listener)

    def remove_work_listener(self, listener: WorkListener) -> None:
        with contextlib.suppress(ValueError):
            self._work_listeners.remove(listener)

    def _tell_work(self) -> None:
        """A run became claimable (here, or in another process that rang the doorbell)."""
        for listener in list(self._work_listeners):
            try:
                listener()
            except Exception:  # a broken listener must not stop the writer
                log.exception("work listener failed")


def makes_work(ops: Sequence[Pending[Any]]) -> bool:
    """Whether committing `ops` may have made a run claimable now: one was created, or a
    lease given back. (A retry later becomes claimable after its delay: the poll finds it.)"""
    return any(isinstance(op, (CreateRun, Release)) for op in ops)
