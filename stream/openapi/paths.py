"""The `paths` section of the OpenAPI document (see stream/openapi/document.py).

Each operation's parameters, security and responses, with the shared error titles
and the helpers that build the response and parameter objects.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from storage.runids import RUN_ID_PATTERN
from stream.http.json_depth import MAX_JSON_DEPTH
from stream.http.problems import PROBLEM_TYPE
from stream.openapi.models import (
    REF,
    AuditReport,
    Health,
    Problem,
    Ready,
    RunList,
    RunLog,
    RunRecord,
    RunStarted,
    StartRun,
)

TITLES = {
    400: "Malformed request (JSON, body not UTF-8, cursor, query parameter or header),"
    " or a cursor past the end of the run or log",
    401: "No credentials, or an expired run token (reason: token_expired)",
    403: "Credentials not valid for this resource",
    404: "No such run or function",
    409: "Conflict with the run's state",
    413: "Request body too large",
    422: f"Body failed validation, its JSON nests deeper than {MAX_JSON_DEPTH} levels, or"
    " the idempotency key was used for another request"
    " (`reason`: `idempotency_conflict`, with `idempotency_key` and `differs`)",
    429: "Too many open streams (see Retry-After)",
    503: "Not ready / log unreadable",
}

SSE_STATUSES = (200, 204, 400, 401, 403, 404, 429)
"""Statuses the stream endpoints answer; a 200 body is an endless `text/event-stream`."""


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _problems(*statuses: int) -> dict[str, Any]:
    return {
        str(status): {
            "description": TITLES[status],
            "content": {PROBLEM_TYPE: {"schema": _ref(Problem)}},
        }
        for status in statuses
    }


def _query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _header(name: str, description: str, required: bool = False, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": schema or {"type": "string"},
    }


RUN_ID = {
    "name": "run_id",
    "in": "path",
    "required": True,
    "description": "The run's id (unknown or malformed ids are 404).",
    "schema": {"type": "string", "pattern": RUN_ID_PATTERN.pattern},
}
API_KEY: list[dict[str, list[str]]] = [{"apiKey": []}, {"apiKeyCookie": []}]
RUN_ACCESS: list[dict[str, list[str]]] = [*API_KEY, {"runToken": []}, {"runTokenBearer": []}]
CURSOR = [
    _header("Last-Event-ID", "Resume after this event id (wins over the query parameter)."),
    _query("last_event_id", "Resume after this event id.", type="string", pattern="^[0-9]{1,18}$"),
]


def _sse(description: str) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": description,
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        "204": {"description": "The run is finished and the cursor is at its end: stop."},
    }
    responses.update(_problems(*[s for s in SSE_STATUSES if s >= 400]))
    return responses


def _paths() -> dict[str, Any]:
    started = {
        "200": _json(RunStarted, "An existing run (a replay: same key, function and params)"),
        "202": _json(RunStarted, "A new run, queued"),
    }
    return {
        "/hooks/{function}": {
            "post": {
                "operationId": "webhook",
                "summary": "Start a run from a Standard Webhooks request",
                "description": "The body is the function's params; `webhook-id` makes it "
                "idempotent (the same id with another body or function is a 422). Unsigned "
                "or badly signed requests are 401 before anything else (the signature is "
                "checked over the body's bytes); a signed body that is not UTF-8 is then a 400.",
                "parameters": [
                    {
                        "name": "function",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    _header("webhook-id", "Standard Webhooks message id", True),
                    _header("webhook-timestamp", "Unix seconds", True),
                    _header("webhook-signature", "v1,<base64 HMAC-SHA256>", True),
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {**started, **_problems(400, 401, 404, 413, 422)},
            }
        },
        "/runs": {
            "post": {
                "operationId": "startRun",
                "summary": "Start a run",
                "security": API_KEY,
                "parameters": [
                    _header(
                        "Idempotency-Key",
                        "Repeat the same request safely: the same key answers the same run;"
                        " the same key with another function or params is a 422.",
                        minLength=1,
                        maxLength=255,
                    )
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(StartRun)}},
                },
                "responses": {**started, **_problems(400, 401, 403, 404, 413, 422)},
            },
            "get": {
                "operationId": "listRuns",
                "summary": "List runs, newest first",
                "security": API_KEY,
                "parameters": [
                    _query("status", "Only runs in this status"),
                    _query(
                        "function",
                        "Only runs of this function (`steplog.archive`: the"
                        " archiver's own runs, otherwise left out)",
                    ),
                    _query("include", "`internal`: also steplog's own runs (`steplog.*`)"),
                    _query("limit", "Page size", type="integer", minimum=1, maximum=1000),
                    _query("before", "Only runs older than this run id"),
                ],
                "responses": {
                    "200": _json(RunList, "A page of runs"),
                    **_problems(400, 401, 403),
                },
            },
        },
        "/runs/{run_id}": {
            "get": {
                "operationId": "getRun",
                "summary": "One run record (a browser asking for HTML gets the run's page)",
                "security": RUN_ACCESS,
                "parameters": [RUN_ID],
                "responses": {
                    "200": _json(RunRecord, "The run"),
                    **_problems(401, 403, 404),
                },
            }
        },
        "/runs/{run_id}/log": {
            "get": {
                "operationId": "runLog",
                "summary": "A page of the run's event envelopes",
                "security": RUN_ACCESS,
                "parameters": [
                    RUN_ID,
                    _query(
                        "after", "Events after this seq", type="integer", minimum=0, maximum=2**62
                    ),
                    _query("limit", "Page size", type="integer", minimum=1, maximum=5000),
                ],
                "responses": {
                    "200": _json(RunLog, "The page"),
                    **_problems(400, 401, 403, 404),
                },
            }
        },
        "/runs/{run_id}/cancel": {
            "post": {
                "operationId": "cancelRun",
                "summary": "End a queued or running run as cancelled",
                "security": RUN_ACCESS,
                "parameters": [RUN_ID],
                "responses": {
                    "200": _json(RunRecord, "The run after cancelling"),
                    **_problems(401, 403, 404, 409),
                },
            }
        },
        "/runs/{run_id}/rerun": {
            "post": {
                "operationId": "rerunRun",
                "summary": "Start a new run of the same function with the same params",
                "description": "The params are copied as stored (secrets stay sealed).",
                "security": API_KEY,
                "parameters": [RUN_ID],
                "responses": {
                    "202": _json(RunStarted, "The new run, queued"),
                    **_problems(401, 403, 404),
                },
            }
        },
        "/runs/{run_id}/events": {
            "get": {
                "operationId": "runEvents",
                "summary": "The run's events as Server-Sent Events",
                "security": RUN_ACCESS,
                "parameters": [RUN_ID, *CURSOR],
                "responses": _sse("The stream (`id:` = the event's seq in the run)"),
            }
        },
        "/events": {
            "get": {
                "operationId": "allEvents",
                "summary": "Every run's events as Server-Sent Events",
                "security": API_KEY,
                "parameters": CURSOR,
                "responses": _sse("The stream (`id:` = the global log position)"),
            }
        },
        "/streams": {
            "get": {
                "operationId": "manyRunsEvents",
                "summary": "The events of a set of runs (and of every run) on one SSE stream",
                "description": "What the stream view's SharedWorker holds for every tab of "
                "a browser. Each `run` is `<id>:<token>` (or `<id>` with the API key); one "
                "whose token is missing, forged or expired gets `event: refused` and is left "
                "out while the others go on. `all=1` (API key) adds every run. `id:` is the "
                "global position; idle, `event: position` carries it. Without a cursor the "
                "stream starts at the log's head.",
                "security": [],
                "parameters": [
                    {
                        "name": "run",
                        "in": "query",
                        "required": False,
                        "style": "form",
                        "explode": True,
                        "description": "A run to follow, as `<id>:<token>` (at most 64).",
                        "schema": {"type": "array", "maxItems": 64, "items": {"type": "string"}},
                    },
                    _query("all", "`1`: every run's events too (API key only).", enum=["1"]),
                    *CURSOR,
                ],
                "responses": _sse("The stream (`id:` = the global log position)"),
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "The process answers",
                "security": [],
                "responses": {"200": _json(Health, "Alive")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "This instance should get traffic",
                "security": [],
                "responses": {"200": _json(Ready, "Ready"), **_problems(503)},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (OpenMetrics when the Accept header asks)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The exposition",
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/openmetrics-text": {"schema": {"type": "string"}},
                        },
                    }
                },
            }
        },
        "/audit/verify": {
            "get": {
                "operationId": "auditVerify",
                "summary": "Verify the log's hash chain (200 whatever the verdict)",
                "security": API_KEY,
                "parameters": [_query("anchor", "Also check an anchor line taken earlier")],
                "responses": {
                    "200": _json(AuditReport, "The report"),
                    **_problems(400, 401, 403, 503),
                },
            }
        },
        "/audit/export": {
            "get": {
                "operationId": "auditExport",
                "summary": "Export events as JSONL (verifiable offline) or CSV, streamed",
                "security": API_KEY,
                "parameters": [
                    _query("format", "Output format", type="string", enum=["jsonl", "csv"]),
                    _query("run", "Only this run"),
                    _query("function", "Only this function"),
                    _query("since", "Only events at or after this time"),
                    _query("until", "Only events before this time"),
                    {
                        "name": "type",
                        "in": "query",
                        "required": False,
                        "description": "Only these event types",
                        "schema": {"type": "array", "items": {"type": "string"}},
                        "style": "form",
                        "explode": True,
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The export",
                        "content": {
                            "application/jsonl": {"schema": {"type": "string"}},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    **_problems(400, 401, 403, 404, 503),
                },
            }
        },
    }
