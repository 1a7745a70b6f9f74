"""The run API (`POST /runs`, `GET /runs`, `GET /runs/{id}`) and who may read what."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from stream.http.tokens import mint
from tests.support.api import (
    LINK_FIELDS,
    assert_nothing_written,
    assert_problem,
    client,
    get_run,
    http_client,
    json_bytes,
    list_runs,
    run_ids,
    run_stream_url,
    start_run,
    token_key,
    wait_for_status,
)
from tests.support.launcher import ServerProcess
from tests.support.sse import read_stream


def test_post_runs_with_api_key_starts_a_run(server: ServerProcess) -> None:
    with client(server) as http:
        response = http.post(
            "/runs", json={"function": "ticker", "params": {"count": 2, "interval_ms": 0}}
        )

    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"run_id", "status", "stream_url", "view_url", "token", "token_expires_at"}
    run_id = body["run_id"]
    assert body["status"] == "queued"
    assert response.headers["location"] == f"/runs/{run_id}"
    run = wait_for_status(server, run_id, "succeeded")
    assert run["function"] == "ticker"
    assert run["params"] == {"count": 2, "interval_ms": 0, "payload_bytes": 0, "fail_at": None}
    assert run["attempt"] == 1
    assert run["result"] == {"ticks": 2}
    assert run["error"] is None
    for stamp in ("created_at", "started_at", "finished_at", "updated_at"):
        assert isinstance(run[stamp], str) and run[stamp].endswith("Z"), run


def test_idempotency_key_starts_one_run(server: ServerProcess) -> None:
    request = {"function": "ticker", "params": {"count": 1, "interval_ms": 0}}
    with client(server) as http:
        first = http.post("/runs", json=request, headers={"Idempotency-Key": "order-42"})
        again = http.post("/runs", json=request, headers={"Idempotency-Key": "order-42"})
        other = http.post("/runs", json=request, headers={"Idempotency-Key": "order-43"})

    assert (first.status_code, again.status_code, other.status_code) == (202, 200, 202)
    assert again.json()["run_id"] == first.json()["run_id"]
    assert other.json()["run_id"] != first.json()["run_id"]
    assert run_ids(server) == {first.json()["run_id"], other.json()["run_id"]}
    # The repeated request did not start the run a second time.
    run = wait_for_status(server, first.json()["run_id"], "succeeded")
    assert run["attempt"] == 1
    wait_for_status(server, other.json()["run_id"], "succeeded")


def test_idempotency_key_reused_for_another_request_is_refused(server: ServerProcess) -> None:
    request = {"function": "ticker", "params": {"count": 1, "interval_ms": 0}}
    key = {"Idempotency-Key": "nightly-2026-11-25"}
    with client(server) as http:
        first = http.post("/runs", json=request, headers=key)
        # Spelled differently, the same request: a default written out, keys reordered.
        same = {"function": "ticker", "params": {"payload_bytes": 0, "interval_ms": 0, "count": 1}}
        again = http.post("/runs", json=same, headers=key)
        other_params = http.post(
            "/runs", json={"function": "ticker", "params": {"count": 2, "interval_ms": 0}},
            headers=key,
        )  # fmt: skip
        secret = {"url": "https://example.org/in/ada",
                  "credentials": {"username": "ada", "password": "pw-9k2m"}}  # fmt: skip
        other_function = http.post(
            "/runs", json={"function": "scrape", "params": secret}, headers=key
        )

    assert (first.status_code, again.status_code) == (202, 200), again.text
    run_id = first.json()["run_id"]
    assert again.json()["run_id"] == run_id
    for response, differs in ((other_params, "params"), (other_function, "function")):
        body = assert_problem(response, 422)
        assert body["reason"] == "idempotency_conflict"
        assert (body["idempotency_key"], body["differs"]) == ("nightly-2026-11-25", differs)
        assert "nightly-2026-11-25" in body["detail"]
    assert "pw-9k2m" not in other_function.text
    assert run_ids(server) == {run_id}
    run = wait_for_status(server, run_id, "succeeded")
    assert (run["attempt"], run["params"]["count"]) == (1, 1)
    assert_nothing_written(server, {run_id})


def test_list_runs_newest_first_and_filtered(echo_server: ServerProcess) -> None:
    server = echo_server
    # One after the other: run ids order by creation time only to the millisecond.
    ok = start_run(server, "ticker", count=1, interval_ms=0)["run_id"]
    wait_for_status(server, ok, "succeeded")
    broken = start_run(server, "ticker", count=3, interval_ms=0, fail_at=2)["run_id"]
    wait_for_status(server, broken, "failed")
    echoed = start_run(server, "echo", messages=["hello"])["run_id"]
    wait_for_status(server, echoed, "succeeded")

    assert [run["id"] for run in list_runs(server)] == [echoed, broken, ok]
    assert [run["id"] for run in list_runs(server, status="failed")] == [broken]
    assert [run["id"] for run in list_runs(server, status="succeeded")] == [echoed, ok]
    assert [run["id"] for run in list_runs(server, function="echo")] == [echoed]
    assert [run["id"] for run in list_runs(server, function="ticker")] == [broken, ok]
    assert [run["id"] for run in list_runs(server, function="ticker", status="succeeded")] == [ok]
    assert list_runs(server, status="cancelled") == []
    assert [run["id"] for run in list_runs(server, limit=1)] == [echoed]
    assert [run["id"] for run in list_runs(server, before=echoed)] == [broken, ok]
    listed = {run["id"]: run for run in list_runs(server)}
    assert listed[broken]["status"] == "failed"
    assert listed[echoed]["function"] == "echo"


def test_listing_runs_by_a_status_that_does_not_exist_is_a_400(server: ServerProcess) -> None:
    """A typo in a filter must not look like "no such runs"."""
    with client(server) as http:
        response = http.get("/runs", params={"status": "finished"})
    problem = assert_problem(response, 400)
    assert "'finished'" in problem["detail"] and "succeeded" in problem["detail"], problem


def test_run_token_or_api_key_opens_the_run_and_its_stream(server: ServerProcess) -> None:
    started = start_run(server, "ticker", count=2, interval_ms=0)
    run_id, token = started["run_id"], started["token"]
    with_key = wait_for_status(server, run_id, "succeeded")

    # GET /runs/{id}: the API key, the token as ?token=, the token as a bearer token.
    with http_client(base_url=server.url) as http:
        with_query_token = http.get(f"/runs/{run_id}", params={"token": token})
        with_bearer_token = http.get(
            f"/runs/{run_id}", headers={"Authorization": f"Bearer {token}"}
        )
    assert with_query_token.status_code == 200, with_query_token.text
    assert with_bearer_token.status_code == 200, with_bearer_token.text
    # The token reads the record; only the API key is handed a fresh token with it.
    assert with_query_token.json() == with_key
    assert with_bearer_token.json() == with_key
    assert not LINK_FIELDS & set(with_query_token.json())
    assert with_key["id"] == run_id
    assert with_key["last_seq"] == 7  # queued, started, step, 2 ticks, step done, succeeded

    # GET /runs/{id}/events: the token as ?token=, the API key as a bearer token.
    with_token = read_stream(run_stream_url(server, run_id), params={"token": token})
    with_api_key = read_stream(run_stream_url(server, run_id), headers=server.headers)
    for stream in (with_token, with_api_key):
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert stream.headers["cache-control"] == "no-cache"
        assert stream.headers["x-accel-buffering"] == "no"
        assert stream.raw.startswith(b"retry: ")
        assert stream.retry == 2000
        assert stream.ended  # the run is over: the response ends after its terminal event
    assert with_token.events == with_api_key.events
    assert [event.id for event in with_api_key.events] == [str(n) for n in range(1, 8)]
    assert with_api_key.events[-1].event == "completed"


# --- refusals -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    method: str
    path: str
    status: int
    auth: str = "key"
    """`key` (the API key), `none`, `wrong-key`, `token` (this run's), `other-token`, `junk`,
    `expired-token` (this run's, past its expiry), `stretched-token` (this run's with a
    later expiry written in), `legacy-token` (this run's, as tokens were before expiries)."""
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    params: tuple[tuple[str, str], ...] = ()
    check: Callable[[dict[str, Any]], None] = lambda body: None


def field_error(loc: list[Any], kind: str) -> Callable[[dict[str, Any]], None]:
    def check(body: dict[str, Any]) -> None:
        errors = body.get("errors")
        assert isinstance(errors, list) and errors, body
        assert any(e["loc"] == loc and e["type"] == kind for e in errors), errors

    return check


def token_expired(body: dict[str, Any]) -> None:
    assert body.get("reason") == "token_expired", body
    assert "expired" in body["detail"], body


def start(params: dict[str, Any], function: str = "ticker") -> bytes:
    return json_bytes({"function": function, "params": params})


UNKNOWN_RUN = "0" * 28  # well-formed, never issued
OVERSIZE = start({"count": 1, "pad": "x" * (1024 * 1024 + 1)})

REFUSALS: dict[str, Refusal] = {
    "POST /runs without an API key": Refusal("POST", "/runs", 401, "none", start({"count": 1})),
    "POST /runs with a wrong API key": Refusal(
        "POST", "/runs", 403, "wrong-key", start({"count": 1})
    ),
    "POST /runs with a run token": Refusal("POST", "/runs", 403, "token", start({"count": 1})),
    "POST /runs with malformed JSON": Refusal("POST", "/runs", 400, body=b'{"function": '),
    "POST /runs with count=-1": Refusal(
        "POST",
        "/runs",
        422,
        body=start({"count": -1}),
        check=field_error(["count"], "greater_than_equal"),
    ),
    "POST /runs with an unknown param": Refusal(
        "POST",
        "/runs",
        422,
        body=start({"count": 1, "speed": "fast"}),
        check=field_error(["speed"], "extra_forbidden"),
    ),
    "POST /runs with an unknown top-level field": Refusal(
        "POST",
        "/runs",
        422,
        body=json_bytes({"function": "ticker", "priority": 1}),
        check=field_error(["priority"], "extra_forbidden"),
    ),
    "POST /runs without a function": Refusal(
        "POST",
        "/runs",
        422,
        body=json_bytes({"params": {}}),
        check=field_error(["function"], "missing"),
    ),
    "POST /runs with an unknown function": Refusal(
        "POST", "/runs", 404, body=start({}, function="no-such-function")
    ),
    "POST /runs with a body over 1 MiB": Refusal("POST", "/runs", 413, body=OVERSIZE),
    "POST /runs with an empty Idempotency-Key": Refusal(
        "POST", "/runs", 400, body=start({"count": 1}), headers=(("Idempotency-Key", ""),)
    ),
    "GET /runs without an API key": Refusal("GET", "/runs", 401, "none"),
    "GET /runs with a run token": Refusal("GET", "/runs", 403, "token"),
    "GET /runs with a bad limit": Refusal("GET", "/runs", 400, params=(("limit", "lots"),)),
    "GET /runs/{id} without auth": Refusal("GET", "/runs/{run}", 401, "none"),
    "GET /runs/{id} with a wrong token": Refusal("GET", "/runs/{run}", 403, "junk"),
    "GET /runs/{id} with another run's token": Refusal("GET", "/runs/{run}", 403, "other-token"),
    "GET /runs/{id} with a wrong API key": Refusal("GET", "/runs/{run}", 403, "wrong-key"),
    "GET /runs/{id} of an unknown run": Refusal("GET", f"/runs/{UNKNOWN_RUN}", 404),
    "GET /runs/{id} with a malformed id": Refusal("GET", "/runs/not-a-run-id", 404),
    "GET /runs/{id}/events without auth": Refusal("GET", "/runs/{run}/events", 401, "none"),
    "GET /runs/{id}/events with a wrong token": Refusal("GET", "/runs/{run}/events", 403, "junk"),
    "GET /runs/{id}/events with another run's token": Refusal(
        "GET", "/runs/{run}/events", 403, "other-token"
    ),
    "GET /runs/{id}/events of an unknown run": Refusal("GET", f"/runs/{UNKNOWN_RUN}/events", 404),
    "GET /runs/{id} with an expired token": Refusal(
        "GET", "/runs/{run}", 401, "expired-token", check=token_expired
    ),
    "GET /runs/{id}/events with an expired token": Refusal(
        "GET", "/runs/{run}/events", 401, "expired-token", check=token_expired
    ),
    "GET /runs/{id}/log with an expired token": Refusal(
        "GET", "/runs/{run}/log", 401, "expired-token", check=token_expired
    ),
    "POST /runs/{id}/cancel with an expired token": Refusal(
        "POST", "/runs/{run}/cancel", 401, "expired-token", check=token_expired
    ),
    "GET /runs/{id}/events with a token from before expiries": Refusal(
        "GET", "/runs/{run}/events", 401, "legacy-token", check=token_expired
    ),
    "GET /runs/{id} with a token whose expiry was pushed back": Refusal(
        "GET", "/runs/{run}", 403, "stretched-token"
    ),
    "GET /runs/{id}/events with a token whose expiry was pushed back": Refusal(
        "GET", "/runs/{run}/events", 403, "stretched-token"
    ),
    "GET /runs/{id}/events with a malformed Last-Event-ID": Refusal(
        "GET", "/runs/{run}/events", 400, headers=(("Last-Event-ID", "abc"),)
    ),
    "GET /runs/{id}/events with a negative Last-Event-ID": Refusal(
        "GET", "/runs/{run}/events", 400, headers=(("Last-Event-ID", "-1"),)
    ),
    "GET /runs/{id}/events with a malformed last_event_id": Refusal(
        "GET", "/runs/{run}/events", 400, params=(("last_event_id", "1.5"),)
    ),
    "GET /events without an API key": Refusal("GET", "/events", 401, "none"),
    "GET /events with a run token": Refusal("GET", "/events", 403, "token"),
    "GET /events with a malformed Last-Event-ID": Refusal(
        "GET", "/events", 400, headers=(("Last-Event-ID", "3; DROP TABLE events"),)
    ),
    "GET /events with a malformed last_event_id": Refusal(
        "GET", "/events", 400, params=(("last_event_id", "ten"),)
    ),
}


def test_bad_requests_are_refused_and_change_nothing(
    server: ServerProcess, subtests: pytest.Subtests
) -> None:
    """Every refusal is a problem document and leaves the log as it was (one server for all)."""
    mine = start_run(server, "ticker", count=1, interval_ms=0)
    other = start_run(server, "ticker", count=1, interval_ms=0)
    run_id = mine["run_id"]
    finished = wait_for_status(server, run_id, "succeeded")
    wait_for_status(server, other["run_id"], "succeeded")
    credentials = {
        "none": None,
        "key": server.api_key,
        "wrong-key": server.api_key + "x",
        "token": mine["token"],
        "other-token": other["token"],
        "junk": "not-a-token",
        **expired_tokens(server, run_id, mine["token"]),
    }

    for case, refusal in REFUSALS.items():
        with subtests.test(msg=case):
            before = run_ids(server)
            headers = dict(refusal.headers)
            credential = credentials[refusal.auth]
            if credential is not None:
                headers["Authorization"] = f"Bearer {credential}"
            if refusal.body is not None:
                headers["Content-Type"] = "application/json"
            with http_client(base_url=server.url, timeout=httpx.Timeout(5.0)) as http:
                response = http.request(
                    refusal.method,
                    refusal.path.format(run=run_id),
                    content=refusal.body,
                    headers=headers,
                    params=dict(refusal.params),
                )

            body = assert_problem(response, refusal.status)
            refusal.check(body)
            assert_nothing_written(server, before)

    # The run every request named is untouched.
    assert get_run(server, run_id) == finished


def expired_tokens(server: ServerProcess, run_id: str, token: str) -> dict[str, str]:
    """Tokens for `run_id` that must not open it, made with the server's own key.

    Minted with an expiry in the past rather than waited for: the same MAC a
    server would have made, only its time has come.
    """
    key = token_key(server)
    expires, _, mac = token.partition(".")
    legacy = hmac.new(key, f"run:{run_id}".encode(), hashlib.sha256).digest()[:24]
    return {
        "expired-token": mint(key, run_id, int(time.time()) - 60).value,
        "stretched-token": f"{int(expires) + 10 * 365 * 86400}.{mac}",
        "legacy-token": base64.urlsafe_b64encode(legacy).decode(),
    }
