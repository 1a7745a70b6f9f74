"""The writes the PostgreSQL writer knows, each applied inside a group-commit batch.

Each mirrors its SQLite twin (storage/sqlite/operations.py) statement for
statement; the SQL lives in queries.sql.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from storage import lifecycle
from storage.errors import InvalidEvent, LeaseLost
from storage.jsonenc import dumps
from storage.model import Event, NewEvent, RunStatus
from storage.postgres.batch import Batch, Operation, RunState
from storage.postgres.queries import QUERIES
from storage.runids import new_run_id


def without_nul(text: str) -> str:
    """Worker-supplied text (an exception's message) stored as well as PostgreSQL can:
    its text type cannot hold NUL, and refusing would lose the retry or the cancel."""
    return text.replace("\x00", "\ufffd")


class AppendOp(Operation[Event]):
    touches_tables = False

    def __init__(self, event: NewEvent) -> None:
        super().__init__()
        self.event = event
        self.data = dumps(event.data)  # encoded now, by the caller, not under the append lock
        self.submitted = time.monotonic()  # for the append latency commit observers see

    @property
    def acknowledged(self) -> bool:
        """Committed and answered with its event (not refused, not abandoned by its caller)."""
        future = self.future
        return future.done() and not future.cancelled() and future.exception() is None

    async def apply(self, batch: Batch) -> Event:
        return batch.add_event(self.event, self.data)


class CreateRunOp(Operation[tuple[str, bool]]):
    def __init__(
        self,
        function: str,
        params: dict[str, Any],
        idempotency_key: str | None,
        max_attempts: int,
    ) -> None:
        super().__init__()
        self.function = function
        self.params = params
        self.idempotency_key = idempotency_key
        self.max_attempts = max_attempts

    async def apply(self, batch: Batch) -> tuple[str, bool]:
        if "\x00" in self.function or "\x00" in (self.idempotency_key or ""):
            raise InvalidEvent("function names and idempotency keys cannot contain NUL")
        run_id = new_run_id(batch.now)
        inserted = await batch.conn.fetchval(
            QUERIES["insert_run"],
            run_id,
            self.function,
            dumps(self.params),
            self.max_attempts,
            self.idempotency_key,
            batch.now_iso,
        )
        if inserted is None:  # the idempotency key is taken: that run, never a second
            existing: str = await batch.conn.fetchval(
                QUERIES["run_by_idempotency_key"], self.idempotency_key
            )
            return existing, False
        # A new row is invisible to other transactions until commit: no lock needed.
        batch.runs[run_id] = RunState(attempt=0, status=RunStatus.QUEUED, last_seq=0)
        batch.add_event(lifecycle.queued(run_id, self.function))
        await batch.flush()
        return run_id, True


class ClaimOp(Operation[str | None]):
    """Lease the oldest claimable run (queued, or running with an expired lease)."""

    def __init__(self, worker_id: str, lease_seconds: float, functions: tuple[str, ...]) -> None:
        super().__init__()
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.functions = functions

    async def apply(self, batch: Batch) -> str | None:
        if not self.functions:
            return None
        while True:
            row = await batch.conn.fetchrow(
                QUERIES["claimable_run_for_update"], list(self.functions), batch.now
            )
            if row is None:
                return None
            run_id, attempt, max_attempts, previous_owner, status = row
            state = await batch.run_state(run_id)
            if status == "running" and attempt >= max_attempts:
                batch.add_event(lifecycle.gave_up(run_id, attempt))
                await batch.flush()
                continue
            lost = previous_owner if status == "running" else None
            return await self._lease(batch, run_id, state, attempt, lost, status == "running")

    async def _lease(
        self,
        batch: Batch,
        run_id: str,
        state: RunState,
        attempt: int,
        previous_owner: str | None,
        lease_expired: bool,
    ) -> str:
        new_attempt = attempt + 1
        await batch.conn.execute(
            QUERIES["lease_run"],
            run_id,
            new_attempt,
            self.worker_id,
            batch.now + self.lease_seconds,
            batch.now_iso,
        )
        state.attempt, state.status = new_attempt, RunStatus.RUNNING
        for event in lifecycle.leased(
            run_id, attempt, self.worker_id, lost_by=previous_owner, lease_expired=lease_expired
        ):
            batch.add_event(event)
        await batch.flush()
        return run_id


class HeartbeatOp(Operation[None]):
    def __init__(self, run_id: str, attempt: int, worker_id: str, lease_seconds: float) -> None:
        super().__init__()
        self.run_id = run_id
        self.attempt = attempt
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds

    async def apply(self, batch: Batch) -> None:
        status = await batch.conn.execute(
            QUERIES["heartbeat"],
            self.run_id,
            self.attempt,
            self.worker_id,
            batch.now + self.lease_seconds,
        )
        if status != "UPDATE 1":
            raise LeaseLost(f"worker {self.worker_id} no longer holds the lease of {self.run_id}")


class ReleaseOp(Operation[None]):
    def __init__(self, run_id: str, attempt: int, worker_id: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.attempt = attempt
        self.worker_id = worker_id

    async def apply(self, batch: Batch) -> None:
        await batch.conn.execute(QUERIES["release"], self.run_id, self.attempt, self.worker_id)


class ProbeOp(Operation[None]):
    """A tiny committed write that touches no run or event: proof the log is writable.

    It is queued like an append, so it also proves the writer is moving and the
    append lock (shared by every process) can be taken.
    """

    async def apply(self, batch: Batch) -> None:
        await batch.conn.execute(QUERIES["probe_writable"], batch.now_iso.encode())


class SecretOp(Operation[bytes]):
    def __init__(self, key: str, candidate: bytes | None = None) -> None:
        super().__init__()
        self.key = key
        self.candidate = candidate or secrets.token_bytes(32)

    async def apply(self, batch: Batch) -> bytes:
        # Two processes creating it at once both end up with the first one's value.
        await batch.conn.execute(QUERIES["insert_secret"], self.key, self.candidate)
        value: bytes = await batch.conn.fetchval(QUERIES["get_secret"], self.key)
        return bytes(value)


class RetryLaterOp(Operation[None]):
    """Put a failed attempt's run back in the queue, claimable after `delay` seconds."""

    def __init__(self, run_id: str, attempt: int, delay: float, error: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.attempt = attempt
        self.delay = delay
        self.error = without_nul(error)

    async def apply(self, batch: Batch) -> None:
        state = await batch.run_state(self.run_id)
        batch.add_event(lifecycle.retrying(self.run_id, self.attempt, self.delay, self.error))
        await batch.flush()
        state.status = RunStatus.QUEUED
        await batch.conn.execute(
            QUERIES["requeue_run"],
            self.run_id,
            batch.now + self.delay,
            self.error,
            batch.now_iso,
        )


class CancelOp(Operation[bool]):
    """End a queued or running run as cancelled; False when it had already ended."""

    def __init__(self, run_id: str, reason: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.reason = without_nul(reason)

    async def apply(self, batch: Batch) -> bool:
        state = await batch.run_state(self.run_id)
        if state.status.finished:
            return False
        batch.add_event(lifecycle.cancelled(self.run_id, state.attempt, self.reason))
        await batch.flush()
        return True
