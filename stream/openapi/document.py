"""The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`.

The document is generated from pydantic models: `StartRun` is the model that
`POST /runs` validates its body with, so the published request schema cannot
drift from what the handler accepts; the response models below describe what the
handlers build by hand (they are documentation, not a serializer, so the
handlers stay as they are). A schemathesis run against a live server
(tests/server/test_api_contract.py) keeps both honest.

Why not quart-schema's generator: every error here is `application/problem+json`
and the streams are `text/event-stream`, and several statuses come from shared
helpers (auth, cursors, the hub) rather than from one handler; writing the
document from the models directly states all of that in one place without
decorating or rewriting the handlers. The HTML pages (`/`, `/login`, `/demo/…`)
and `/static` are not API and are left out.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from quart import Blueprint, Response

from storage.jsonenc import dumps
from stream.http.json_depth import MAX_JSON_DEPTH
from stream.openapi.models import MODELS, REF
from stream.openapi.paths import API_KEY, _paths


@cache
def document() -> dict[str, Any]:
    """The whole document; built once, since models and routes are fixed at import."""
    schemas: dict[str, Any] = {}
    for model in MODELS:
        schema = model.model_json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "steplog",
            "version": "0.1.0",
            "description": "Run long webhook-triggered jobs and stream every step live over SSE. "
            "Every error is application/problem+json (RFC 9457), including those the HTTP "
            "server gives before any route: 431 for a request line and headers over 16 KiB, "
            "400 for a request that is not valid HTTP/1.1. Integers in the query and in "
            "Last-Event-ID are ASCII digits only; JSON bodies nest at most "
            f"{MAX_JSON_DEPTH} levels.",
        },
        "security": API_KEY,
        "paths": _paths(),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "STEPLOG_API_KEY"},
                "apiKeyCookie": {"type": "apiKey", "in": "cookie", "name": "steplog_key"},
                "runToken": {"type": "apiKey", "in": "query", "name": "token"},
                "runTokenBearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


openapi = Blueprint("openapi", __name__)


@openapi.get("/openapi.json")
async def openapi_json() -> Response:
    """Public like /healthz: the contract is no secret, and clients generate from it."""
    return Response(dumps(document()), content_type="application/json")
