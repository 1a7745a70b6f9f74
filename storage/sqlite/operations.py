"""The writes the SQLite writer knows, each applied inside a group-commit batch.

The requests and their parameters are shared with PostgreSQL (storage/writer/writes.py);
what is here is how SQLite applies each one, on the writer thread.
"""

from __future__ import annotations

from dataclasses import replace

from storage import lifecycle
from storage.errors import LeaseLost
from storage.model import Event, Run, RunStatus
from storage.runids import new_run_id
from storage.sqlfiles import SQLITE as Q
from storage.sqlite.batch import Batch, Operation, RunState
from storage.sqlite.rows import run_from_row
from storage.writer.writes import (
    Append,
    Cancel,
    Claim,
    CreateRun,
    Heartbeat,
    Release,
    RetryLater,
    Secret,
)


class AppendOp(Append, Operation[Event]):
    def apply(self, batch: Batch) -> Event:
        return batch.add_event(self.event, self.data)


class CreateRunOp(CreateRun, Operation[tuple[Run, bool]]):
    def apply(self, batch: Batch) -> tuple[Run, bool]:
        if self.idempotency_key is not None:
            rows = batch.fetchall(Q["run_by_idempotency_key"], (self.idempotency_key,))
            if rows:
                return self.replay(run_from_row(rows[0]))
        run_id = new_run_id(batch.now)
        [row] = batch.fetchall(
            Q["insert_run"],
            (
                run_id,
                self.function,
                self.params_json,
                self.max_attempts,
                self.idempotency_key,
                self.fingerprint,
                batch.now_iso,
                batch.now_iso,
            ),
        )
        batch.add_new_run(run_id, self.function)
        batch.flush()
        # The row as inserted, with the seq of its `run.queued` (written by the flush).
        return replace(run_from_row(row), last_seq=batch.known_run(run_id).last_seq), True


class ClaimOp(Claim, Operation[Run | None]):
    def apply(self, batch: Batch) -> Run | None:
        if not self.functions:
            return None
        marks = ",".join("?" * len(self.functions))
        while True:
            rows = batch.fetchall(
                Q["claimable_run"].format(marks=marks),
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
    ) -> Run:
        self.leased = (run_id, attempt + 1)
        batch.add_lease(run_id, state, attempt, self.worker_id, previous_owner, lease_expired)
        batch.flush()
        # Last, so the row it returns is the run as this claim commits it.
        [row] = batch.fetchall(
            Q["lease_run"],
            (
                attempt + 1,
                self.worker_id,
                batch.now + self.lease_seconds,
                batch.now_iso,
                batch.now_iso,
                run_id,
            ),
        )
        return run_from_row(row)


class HeartbeatOp(Heartbeat, Operation[None]):
    def apply(self, batch: Batch) -> None:
        cur = batch.conn.execute(
            Q["heartbeat"],
            (batch.now + self.lease_seconds, self.run_id, self.attempt, self.worker_id),
        )
        if cur.rowcount != 1:
            raise LeaseLost(f"worker {self.worker_id} no longer holds the lease of {self.run_id}")


class ReleaseOp(Release, Operation[None]):
    def apply(self, batch: Batch) -> None:
        # An expired lease is what makes a run claimable again: expire it now.
        batch.conn.execute(
            Q["release"],
            (self.run_id, self.attempt, self.worker_id),
        )


class ProbeOp(Operation[None]):
    """A tiny committed write that touches no run or event: proof the log is writable."""

    def apply(self, batch: Batch) -> None:
        batch.conn.execute(Q["probe_writable"], (batch.now_iso.encode(),))


class SecretOp(Secret, Operation[bytes]):
    def apply(self, batch: Batch) -> bytes:
        query = Q["replace_secret" if self.replace else "insert_secret"]
        batch.conn.execute(query, (self.key, self.candidate))
        rows = batch.fetchall(Q["get_secret"], (self.key,))
        return bytes(rows[0][0])


class RetryLaterOp(RetryLater, Operation[None]):
    def apply(self, batch: Batch) -> None:
        state = batch.run_state(self.run_id)
        batch.add_event(
            lifecycle.retrying(
                self.run_id, self.attempt, self.delay, self.error, refund=self.refund
            )
        )
        batch.flush()
        state.status = RunStatus.QUEUED
        batch.conn.execute(
            Q["requeue_run"],
            (batch.now + self.delay, self.error, batch.now_iso, int(self.refund), self.run_id),
        )


class CancelOp(Cancel, Operation[bool]):
    def apply(self, batch: Batch) -> bool:
        state = batch.run_state(self.run_id)
        if state.status.finished:
            return False
        batch.add_event(lifecycle.cancelled(self.run_id, state.attempt, self.reason))
        batch.flush()
        return True
