"""The response models of the OpenAPI document (see stream/openapi/document.py).

They describe what the handlers build by hand; they are documentation, not a
serializer. `StartRun` comes from stream.http.runs, the model `POST /runs` validates with.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from stream.http.runs import StartRun

REF = "#/components/schemas/{model}"


class Problem(BaseModel):
    """RFC 9457 problem details; some problems add members (`errors`, `checks`, `reason`)."""

    model_config = ConfigDict(extra="allow")
    type: str = "about:blank"
    title: str
    status: int
    detail: str


class RunStarted(BaseModel):
    """What starting a run answers: where to follow it, and the run token that may (until
    `token_expires_at`, `STEPLOG_TOKEN_TTL` from now)."""

    run_id: str
    status: str
    stream_url: str
    view_url: str
    token: str
    token_expires_at: str


class RunRecord(BaseModel):
    """One run as `GET /runs/{id}` shows it (secrets in params are masked)."""

    id: str
    function: str
    params: dict[str, Any]
    status: str
    attempt: int
    max_attempts: int
    last_seq: int
    created_at: float | int | str | None
    started_at: float | int | str | None
    finished_at: float | int | str | None
    updated_at: float | int | str | None
    result: Any = None
    error: Any = None
    steps: list[str]
    trigger: str | None = None
    """How the run was started: `webhook`, `api` or `rerun` (from its idempotency key)."""
    internal: bool = False
    """A run steplog wrote for itself (`steplog.archive`): `GET /runs` leaves it out."""
    rerunnable: bool = True
    """False for a function this server does not know (or an internal run): no Re-run."""
    stream_url: str | None = None
    """`GET /runs/{id}` with the API key only, like the three below: a fresh run token."""
    view_url: str | None = None
    token: str | None = None
    token_expires_at: str | None = None


class RunList(BaseModel):
    """A page of runs, newest first, with the log head read before the page."""

    runs: list[RunRecord]
    head: int
    functions: list[str]
    counts: dict[str, int] | None = None
    """How many runs are in each status, over the whole log (not just this page; without
    steplog's own runs unless they were asked for)."""
    demo_url: str | None = None


class RunLog(BaseModel):
    """A page of one run's event envelopes."""

    run_id: str
    last_seq: int
    events: list[dict[str, Any]]


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    checks: dict[str, str]


class AuditReport(BaseModel):
    """The verification report; `ok` is the verdict, the rest names what was checked."""

    model_config = ConfigDict(extra="allow")
    ok: bool


MODELS: tuple[type[BaseModel], ...] = (
    StartRun,
    Problem,
    RunStarted,
    RunRecord,
    RunList,
    RunLog,
    Health,
    Ready,
    AuditReport,
)
