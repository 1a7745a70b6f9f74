"""Column lists and row decoding shared by the SQLite queries."""

from __future__ import annotations

from typing import Any

from storage.jsonenc import loads
from storage.model import Run, RunStatus

EVENT_COLUMNS = "pos, run_id, seq, type, step, message, pct, data, attempt, at, hash"
"""In the field order of `storage.model.Event`, so a row is `Event(*row)`."""

RUN_COLUMNS = (
    "id, function, params, status, attempt, max_attempts, last_seq, created_at, updated_at,"
    " idempotency_key, lease_owner, lease_expires_at, started_at, finished_at, result, error,"
    " idempotency_fingerprint"
)


def run_from_row(row: Any) -> Run:
    (
        run_id,
        function,
        params,
        status,
        attempt,
        max_attempts,
        last_seq,
        created_at,
        updated_at,
        idempotency_key,
        lease_owner,
        lease_expires_at,
        started_at,
        finished_at,
        result,
        error,
        idempotency_fingerprint,
    ) = row
    return Run(
        id=run_id,
        function=function,
        params=loads(params),
        status=RunStatus(status),
        attempt=attempt,
        max_attempts=max_attempts,
        last_seq=last_seq,
        created_at=created_at,
        updated_at=updated_at,
        idempotency_key=idempotency_key,
        idempotency_fingerprint=idempotency_fingerprint,
        lease_owner=lease_owner,
        lease_expires_at=lease_expires_at,
        started_at=started_at,
        finished_at=finished_at,
        result=None if result is None else loads(result),
        error=error,
    )
