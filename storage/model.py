"""Plain, frozen records that cross the storage boundary: events and runs."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class EventType(enum.StrEnum):
    """Every kind of event a run's log can hold (the envelope contract in the README)."""

    RUN_QUEUED = "run.queued"
    RUN_STARTED = "run.started"
    STEP_STARTED = "step.started"
    STEP_PROGRESS = "step.progress"
    STEP_COMPLETED = "step.completed"
    STEP_FAILED = "step.failed"
    LOG = "log"
    RUN_RETRYING = "run.retrying"
    RUN_SUCCEEDED = "run.succeeded"
    RUN_FAILED = "run.failed"
    RUN_CANCELLED = "run.cancelled"
    ARCHIVE_SEGMENT = "archive.segment"
    """Written only by the archiver (storage/archive/): a segment left the live log."""


EVENT_TYPES: frozenset[str] = frozenset(EventType)

TERMINAL_EVENTS: frozenset[str] = frozenset(
    {EventType.RUN_SUCCEEDED, EventType.RUN_FAILED, EventType.RUN_CANCELLED}
)


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})

STATUS_OF_TERMINAL: dict[str, RunStatus] = {
    EventType.RUN_SUCCEEDED: RunStatus.SUCCEEDED,
    EventType.RUN_FAILED: RunStatus.FAILED,
    EventType.RUN_CANCELLED: RunStatus.CANCELLED,
}


class NewEvent(NamedTuple):
    """What a writer asks to append; the log assigns seq, pos, time and hash.

    Events are named tuples rather than frozen dataclasses: just as immutable, and
    several times cheaper to build, which counts on the append path (every event).
    """

    run_id: str
    type: str
    attempt: int
    step: str | None = None
    message: str | None = None
    pct: float | None = None
    data: Any = None


class Event(NamedTuple):
    """One committed row of the event log.

    `data` is kept as its JSON text: the stream writes it into frames without
    decoding and re-encoding it, and the hash chain covers exactly these bytes.
    """

    pos: int
    run_id: str
    seq: int
    type: str
    step: str | None
    message: str | None
    pct: float | None
    data: str
    attempt: int
    at: str
    hash: str

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS


@dataclass(frozen=True, slots=True)
class Run:
    """The run record: a projection of the run's events plus its lease."""

    id: str
    function: str
    params: dict[str, Any]
    status: RunStatus
    attempt: int
    max_attempts: int
    last_seq: int
    created_at: str
    updated_at: str
    idempotency_key: str | None = None
    idempotency_fingerprint: str | None = None
    """A hash of the params a keyed run was created with (storage/writer/idempotency.py)."""
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    started_at: str | None = None
    finished_at: str | None = None
    result: Any = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
