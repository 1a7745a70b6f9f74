"""The event log and run records (SQLite embedded; PostgreSQL later)."""

from __future__ import annotations

from pathlib import Path

from storage.errors import (
    InvalidEvent,
    LeaseLost,
    RunFinished,
    RunNotFound,
    SteplogError,
    StorageClosed,
)
from storage.interface import EventLog
from storage.model import TERMINAL_EVENTS, Event, EventType, NewEvent, Run, RunStatus

__all__ = [
    "TERMINAL_EVENTS",
    "Event",
    "EventLog",
    "EventType",
    "InvalidEvent",
    "LeaseLost",
    "NewEvent",
    "Run",
    "RunFinished",
    "RunNotFound",
    "RunStatus",
    "SteplogError",
    "StorageClosed",
    "open_log",
]


def open_log(url: str, **options: object) -> EventLog:
    """Build (not yet open) the event log a URL names: a path or `sqlite:///path`."""
    if url.startswith(("postgres://", "postgresql://")):
        raise SteplogError("the PostgreSQL backend is not available in this version yet")
    from storage.sqlite.log import SQLiteEventLog

    path = url.removeprefix("sqlite://") if url.startswith("sqlite://") else url
    return SQLiteEventLog(Path(path), **options)  # type: ignore[arg-type]
