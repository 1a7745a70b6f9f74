"""The HTTP API keeps the contract `/openapi.json` publishes, checked by schemathesis live.

One real `steplog serve` is started and every documented operation is fuzzed
from the document itself (derandomized, a bounded number of examples each, so
the run is repeatable and quick), with the API key sent as a bearer token.
Every response must: not be a 5xx, have a documented status, match the
documented schema, and if it is an error, be `application/problem+json` with a
JSON object body whose `status` is the response's.

The stream endpoints are endless `text/event-stream` bodies: they are requested
with a streaming client that reads only the status line and headers, so their
statuses and content types are checked but not their bodies.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from stream.app import create_app
from stream.http.problems import PROBLEM_TYPE
from stream.openapi.document import document
from stream.settings import Settings
from tests.conftest import ServerFactory

MAX_EXAMPLES = 25
NOT_API = {"pages", "static", "openapi", "demo"}
"""Blueprints that serve HTML, files or the document itself: deliberately undocumented."""
STREAMING = {"/events", "/runs/{run_id}/events", "/streams"}


def problem_json(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx is a problem document (RFC 9457), never HTML or plain text."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])
    if isinstance(content_type, list):
        content_type = content_type[0] if content_type else ""
    assert content_type.split(";")[0].strip() == PROBLEM_TYPE, (
        f"{case.method} {case.formatted_path} -> {response.status_code} with {content_type!r}"
    )
    body = json.loads(response.content)
    assert isinstance(body, dict), f"problem body is not an object: {body!r}"
    assert body.get("status") == response.status_code, body
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    problem_json,
]


def _check_stream(case: Any, base_url: str, auth: dict[str, str]) -> None:
    """Status and content type of a stream endpoint, without reading the endless body."""
    kwargs = case.as_transport_kwargs(base_url=base_url, headers=auth)
    documented = {int(code) for code in case.operation.responses.status_codes}
    with httpx.stream(
        kwargs["method"],
        kwargs["url"],
        params=kwargs.get("params"),
        headers=kwargs.get("headers"),
        timeout=10,
    ) as response:
        status = response.status_code
        content_type = response.headers.get("content-type", "").split(";")[0]
        assert status < 500, f"{case.formatted_path} -> {status}"
        assert status in documented, f"{case.formatted_path} -> undocumented {status}"
        if status == 200:
            assert content_type == "text/event-stream", content_type
        elif status >= 400:
            assert content_type == PROBLEM_TYPE, content_type
            body = json.loads(response.read())
            assert body["status"] == status, body


@pytest.mark.timeout(180)
def test_api_keeps_its_openapi_contract(server_factory: ServerFactory) -> None:
    # No workers: runs started by the fuzzer stay queued, so the run log stays small
    # and `cancel` has something to cancel.
    server = server_factory(poll_interval=0.2, ping_interval=1, workers=0)
    started = time.monotonic()
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    auth = {"Authorization": f"Bearer {server.api_key}"}
    made = httpx.post(
        f"{server.url}/runs",
        json={"function": "ticker", "params": {"count": 3}},
        headers=auth,
        timeout=10,
    )
    assert made.status_code == 202, made.text
    real_run = made.json()["run_id"]
    tested: list[str] = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            pytest.fail(f"the document has an unusable operation: {result.err()}")
        operation = result.ok()

        @settings(
            max_examples=MAX_EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(), real=st.booleans())
        def exercise(case: Any, real: bool) -> None:
            # Random ids and function names only ever reach the 404s; half the
            # examples name a real run or function so the handlers' other paths run.
            if real and "run_id" in (case.path_parameters or {}):
                case.path_parameters["run_id"] = real_run
            if real and isinstance(case.body, dict) and "function" in case.body:
                case.body["function"] = "ticker"
            if case.path in STREAMING:
                _check_stream(case, server.url, auth)
                return
            response = case.call(base_url=server.url, headers=auth, timeout=10)
            case.validate_response(response, checks=CHECKS, headers=auth)

        exercise()
        tested.append(f"{operation.method.upper()} {operation.path}")
    assert len(tested) >= 13, tested
    assert time.monotonic() - started < 120


def test_every_api_route_is_documented(tmp_path: Path) -> None:
    """A route added without documenting it would escape the contract run above."""
    app = create_app(Settings.from_env({}, db=str(tmp_path / "steplog.db"), workers=0))
    documented = {(path, method) for path, ops in document()["paths"].items() for method in ops}
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] in NOT_API:
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if (path, method.lower()) not in documented:
                missing.append(f"{method} {path}")
    assert not missing, f"routes missing from /openapi.json: {missing}"
