"""The event log and run records (SQLite embedded, or PostgreSQL shared)."""

from __future__ import annotations

from storage.backends import open_log
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
