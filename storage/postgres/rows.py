"""Decoding PostgreSQL rows into the storage records."""

from __future__ import annotations

from typing import Any

import asyncpg

from storage.jsonenc import loads
from storage.model import Event, Run, RunStatus


def event_from_record(record: Any) -> Event:
    """The `read_*` queries select the columns in `Event`'s field order."""
    return Event(*record)


def run_from_record(record: asyncpg.Record) -> Run:
    result = record["result"]
    return Run(
        id=record["id"],
        function=record["function"],
        params=loads(record["params"]),
        status=RunStatus(record["status"]),
        attempt=record["attempt"],
        max_attempts=record["max_attempts"],
        last_seq=record["last_seq"],
        created_at=record["created_at"],
        updated_at=record["updated_at"],
        idempotency_key=record["idempotency_key"],
        idempotency_fingerprint=record["idempotency_fingerprint"],
        lease_owner=record["lease_owner"],
        lease_expires_at=record["lease_expires_at"],
        started_at=record["started_at"],
        finished_at=record["finished_at"],
        result=None if result is None else loads(result),
        error=record["error"],
    )
