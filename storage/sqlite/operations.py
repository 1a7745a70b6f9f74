"""The writes the SQLite writer knows, each applied inside a group-commit batch."""

from __future__ import annotations

import secrets
import time
from typing import Any

from storage import lifecycle
from storage.errors import LeaseLost
from storage.jsonenc import dumps
from storage.model import Event, NewEvent, RunStatus
from storage.runids import new_run_id
from storage.sqlite.batch import Batch, Operation, RunState


class AppendOp(Operation[Event]):
    appends = True

    def __init__(self, event: NewEvent) -> None:
        super().__init__()
        self.event = event
        self.submitted = time.monotonic()  # for the append latency commit observers see

    @property
    def acknowledged(self) -> bool:
        """Committed and answered with its event (not refused, not abandoned by its caller)."""
        future = self.future
        return future.done() and not future.cancelled() and future.exception() is None

    def apply(self, batch: Batch) -> Event:
        return batch.add_event(self.event)


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

    def apply(self, batch: Batch) -> tuple[str, bool]:
        if self.idempotency_key is not None:
            rows = batch.fetchall(
                "SELECT id FROM runs WHERE idempotency_key = ?", (self.idempotency_key,)
            )
            if rows:
                return rows[0][0], False
        run_id = new_run_id(batch.now)
        batch.conn.execute(
            "INSERT INTO runs (id, function, params, status, attempt, max_attempts, last_seq,"
            " idempotency_key, created_at, updated_at)"
            " VALUES (?, ?, ?, 'queued', 0, ?, 0, ?, ?, ?)",
            (
                run_id,
                self.function,
                dumps(self.params),
                self.max_attempts,
                self.idempotency_key,
                batch.now_iso,
                batch.now_iso,
            ),
        )
        batch.runs[run_id] = RunState(attempt=0, status=RunStatus.QUEUED, last_seq=0)
        batch.add_event(lifecycle.queued(run_id, self.function))
        batch.flush()
        return run_id, True


class ClaimOp(Operation[str | None]):
    """Lease the oldest claimable run (queued, or running with an expired lease)."""

    def __init__(self, worker_id: str, lease_seconds: float, functions: tuple[str, ...]) -> None:
        super().__init__()
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.functions = functions

    def apply(self, batch: Batch) -> str | None:
        if not self.functions:
            return None
        marks = ",".join("?" * len(self.functions))
        while True:
            rows = batch.fetchall(
                "SELECT id, attempt, max_attempts, lease_owner, status FROM runs"
                f" WHERE function IN ({marks})"
                "   AND ((status = 'queued' AND available_at <= ?)"
                "     OR (status = 'running' AND lease_expires_at < ?))"
                " ORDER BY created_at, id LIMIT 1",
                (*self.functions, batch.now, batch.now),
            )
            if not rows:
                return None
            run_id, attempt, max_attempts, previous_owner, status = rows[0]
            state = batch.run_state(run_id)
            if status == "running" and attempt >= max_attempts:
                batch.add_event(lifecycle.gave_up(run_id, attempt))
                batch.flush()
                continue
            lost = previous_owner if status == "running" else None
            return self._lease(batch, run_id, state, attempt, lost, status == "running")

    def _lease(
        self,
        batch: Batch,
        run_id: str,
        state: RunState,
        attempt: int,
        previous_owner: str | None,
        lease_expired: bool,
    ) -> str:
        new_attempt = attempt + 1
        batch.conn.execute(
            "UPDATE runs SET status = 'running', attempt = ?, lease_owner = ?,"
            " lease_expires_at = ?, started_at = coalesce(started_at, ?), updated_at = ?"
            " WHERE id = ?",
            (
                new_attempt,
                self.worker_id,
                batch.now + self.lease_seconds,
                batch.now_iso,
                batch.now_iso,
                run_id,
            ),
        )
        state.attempt, state.status = new_attempt, RunStatus.RUNNING
        for event in lifecycle.leased(
            run_id, attempt, self.worker_id, lost_by=previous_owner, lease_expired=lease_expired
        ):
            batch.add_event(event)
        batch.flush()
        return run_id


class HeartbeatOp(Operation[None]):
    def __init__(self, run_id: str, attempt: int, worker_id: str, lease_seconds: float) -> None:
        super().__init__()
        self.run_id = run_id
        self.attempt = attempt
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds

    def apply(self, batch: Batch) -> None:
        cur = batch.conn.execute(
            "UPDATE runs SET lease_expires_at = ? WHERE id = ? AND attempt = ?"
            " AND lease_owner = ? AND status = 'running'",
            (batch.now + self.lease_seconds, self.run_id, self.attempt, self.worker_id),
        )
        if cur.rowcount != 1:
            raise LeaseLost(f"worker {self.worker_id} no longer holds the lease of {self.run_id}")


class ReleaseOp(Operation[None]):
    def __init__(self, run_id: str, attempt: int, worker_id: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.attempt = attempt
        self.worker_id = worker_id

    def apply(self, batch: Batch) -> None:
        # An expired lease is what makes a run claimable again: expire it now.
        batch.conn.execute(
            "UPDATE runs SET lease_expires_at = 0, lease_owner = NULL WHERE id = ? AND attempt = ?"
            " AND lease_owner = ? AND status = 'running'",
            (self.run_id, self.attempt, self.worker_id),
        )


class ProbeOp(Operation[None]):
    """A tiny committed write that touches no run or event: proof the log is writable."""

    def apply(self, batch: Batch) -> None:
        batch.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('probe:writable', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (batch.now_iso.encode(),),
        )


class SecretOp(Operation[bytes]):
    def __init__(self, key: str, candidate: bytes | None = None) -> None:
        super().__init__()
        self.key = key
        self.candidate = candidate or secrets.token_bytes(32)

    def apply(self, batch: Batch) -> bytes:
        batch.conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (self.key, self.candidate)
        )
        rows = batch.fetchall("SELECT value FROM meta WHERE key = ?", (self.key,))
        return bytes(rows[0][0])


class RetryLaterOp(Operation[None]):
    """Put a failed attempt's run back in the queue, claimable after `delay` seconds."""

    def __init__(self, run_id: str, attempt: int, delay: float, error: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.attempt = attempt
        self.delay = delay
        self.error = error

    def apply(self, batch: Batch) -> None:
        state = batch.run_state(self.run_id)
        batch.add_event(lifecycle.retrying(self.run_id, self.attempt, self.delay, self.error))
        batch.flush()
        state.status = RunStatus.QUEUED
        batch.conn.execute(
            "UPDATE runs SET status = 'queued', available_at = ?, lease_owner = NULL,"
            " lease_expires_at = NULL, error = ?, updated_at = ? WHERE id = ?",
            (batch.now + self.delay, self.error, batch.now_iso, self.run_id),
        )


class CancelOp(Operation[bool]):
    """End a queued or running run as cancelled; False when it had already ended."""

    def __init__(self, run_id: str, reason: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.reason = reason

    def apply(self, batch: Batch) -> bool:
        state = batch.run_state(self.run_id)
        if state.status.finished:
            return False
        batch.add_event(lifecycle.cancelled(self.run_id, state.attempt, self.reason))
        batch.flush()
        return True
