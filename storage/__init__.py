"""The event log and run records (SQLite embedded, or PostgreSQL shared)."""

from __future__ import annotations

from pathlib import Path

from storage.errors import (
    IdempotencyConflict,
    InvalidEvent,
    LeaseLost,
    RunFinished,
    RunNotFound,
    SteplogError,
    StorageClosed,
    StorageFull,
    StorageLow,
)
from storage.interface import EventLog
from storage.model import TERMINAL_EVENTS, Event, EventType, NewEvent, Run, RunStatus

__all__ = [
    "TERMINAL_EVENTS",
    "Event",
    "EventLog",
    "EventType",
    "IdempotencyConflict",
    "InvalidEvent",
    "LeaseLost",
    "NewEvent",
    "Run",
    "RunFinished",
    "RunNotFound",
    "RunStatus",
    "SteplogError",
    "StorageClosed",
    "StorageFull",
    "StorageLow",
    "open_log",
]


# Options only the SQLite backend understands; callers pass them whatever the URL.
_SQLITE_ONLY = frozenset({"synchronous", "min_free_bytes"})


def open_log(url: str, **options: object) -> EventLog:
    """Build (not yet open) the event log a URL names.

    `postgresql://…` (or `postgres://…`) is the PostgreSQL backend, which ignores
    SQLite-only options such as `synchronous`; anything else is a SQLite file,
    as a path or `sqlite:///path`.
    """
    if url.startswith(("postgres://", "postgresql://")):
        from storage.postgres.log import PostgresEventLog

        kept = {name: value for name, value in options.items() if name not in _SQLITE_ONLY}
        return PostgresEventLog(url, **kept)  # type: ignore[arg-type]
    from storage.sqlite.log import SQLiteEventLog

    path = url.removeprefix("sqlite://") if url.startswith("sqlite://") else url
    return SQLiteEventLog(Path(path), **options)  # type: ignore[arg-type]
