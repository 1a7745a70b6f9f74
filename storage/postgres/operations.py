"""The writes the PostgreSQL writer knows, each applied inside a group-commit batch.

The requests and their parameters are shared with SQLite (storage/writer/writes.py);
each operation here mirrors its SQLite twin (storage/sqlite/operations.py)
statement for statement; the SQL lives in queries.sql.
"""

from __future__ import annotations

from dataclasses import replace

from storage import lifecycle
from storage.errors import LeaseLost
from storage.model import Event, Run, RunStatus
from storage.postgres.batch import Batch, Operation, RunState
from storage.postgres.rows import run_from_record
from storage.runids import new_run_id
from storage.sqlfiles import POSTGRES as QUERIES
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
    async def apply(self, batch: Batch) -> Event:
        return batch.add_event(self.event, self.data)


class CreateRunOp(CreateRun, Operation[tuple[Run, bool]]):
    async def apply(self, batch: Batch) -> tuple[Run, bool]:
        run_id = new_run_id(batch.now)
        inserted = await batch.conn.fetchrow(
            QUERIES["insert_run"],
            run_id,
            self.function,
            self.params_json,
            self.max_attempts,
            self.idempotency_key,
            self.fingerprint,
            batch.now_iso,
        )
        if inserted is None:  # the idempotency key is taken: that run, never a second
            existing = await batch.conn.fetchrow(
                QUERIES["run_by_idempotency_key"], self.idempotency_key
            )
            assert existing is not None, "runs are never deleted"
            return self.replay(run_from_record(existing))
        # A new row is invisible to other transactions until commit: no lock needed.
        batch.add_new_run(run_id, self.function)
        await batch.flush()
        # The row as inserted, with the seq of its `run.queued` (written by the flush).
        run = run_from_record(inserted)
        return replace(run, last_seq=batch.known_run(run_id).last_seq), True


class ClaimOp(Claim, Operation[Run | None]):
    async def apply(self, batch: Batch) -> Run | None:
        self.leased = None  # a batch may run twice (see PostgresEventLog._run_batch)
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
    ) -> Run:
        self.leased = (run_id, attempt + 1)
        batch.add_lease(run_id, state, attempt, self.worker_id, previous_owner, lease_expired)
        await batch.flush()
        # Last, so the row it returns is the run as this claim commits it.
        row = await batch.conn.fetchrow(
            QUERIES["lease_run"],
            run_id,
            attempt + 1,
            self.worker_id,
            batch.now + self.lease_seconds,
            batch.now_iso,
        )
        assert row is not None, "the run is locked by this transaction"
        return run_from_record(row)


class HeartbeatOp(Heartbeat, Operation[None]):
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


class ReleaseOp(Release, Operation[None]):
    async def apply(self, batch: Batch) -> None:
        await batch.conn.execute(QUERIES["release"], self.run_id, self.attempt, self.worker_id)


class ProbeOp(Operation[None]):
    """A tiny committed write that touches no run or event: proof the log is writable.

    It is queued like an append, so it also proves the writer is moving and the
    append lock (shared by every process) can be taken.
    """

    async def apply(self, batch: Batch) -> None:
        await batch.conn.execute(QUERIES["probe_writable"], batch.now_iso.encode())


class SecretOp(Secret, Operation[bytes]):
    async def apply(self, batch: Batch) -> bytes:
        # Two processes creating it at once both end up with the first one's value.
        query = QUERIES["replace_secret" if self.replace else "insert_secret"]
        await batch.conn.execute(query, self.key, self.candidate)
        value: bytes = await batch.conn.fetchval(QUERIES["get_secret"], self.key)
        return bytes(value)


class RetryLaterOp(RetryLater, Operation[None]):
    async def apply(self, batch: Batch) -> None:
        state = await batch.run_state(self.run_id)
        batch.add_event(
            lifecycle.retrying(
                self.run_id, self.attempt, self.delay, self.error, refund=self.refund
            )
        )
        await batch.flush()
        state.status = RunStatus.QUEUED
        await batch.conn.execute(
            QUERIES["requeue_run"],
            self.run_id,
            batch.now + self.delay,
            self.error,
            batch.now_iso,
            int(self.refund),
        )


class CancelOp(Cancel, Operation[bool]):
    async def apply(self, batch: Batch) -> bool:
        state = await batch.run_state(self.run_id)
        if state.status.finished:
            return False
        batch.add_event(lifecycle.cancelled(self.run_id, state.attempt, self.reason))
        await batch.flush()
        return True
