"""Calls to a real `steplog serve`'s HTTP API, as its users make them.

Nothing here fakes the server: webhooks are signed with the `standardwebhooks`
library exactly as a sender would, streams are read with the one SSE reader
(`tests.support.sse`), and every wait is `tests.support.wait`'s condition polled
against a deadline, never a fixed sleep.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks import Webhook

from stream.sse.parser import ParsedEvent, SSEParser
from tests.support.launcher import ServerProcess
from tests.support.sse import read_stream
from tests.support.wait import wait_until

ENVELOPE_KEYS = {"run_id", "seq", "type", "step", "message", "pct", "data", "attempt", "at"}
PROBLEM_JSON = "application/problem+json"


# --- plain API calls ------------------------------------------------------------------------


def http_client(**options: Any) -> httpx.Client:
    """An httpx client for plain HTTP on 127.0.0.1.

    `verify=False` only skips loading the CA bundle (about 60 ms per client, which
    adds up over hundreds of requests): these servers speak no TLS at all.
    """
    options.setdefault("timeout", httpx.Timeout(10.0))
    return httpx.Client(verify=False, **options)


def client(server: ServerProcess, *, auth: bool = True) -> httpx.Client:
    """An HTTP client for `server`, sending its API key unless `auth` is False."""
    return http_client(base_url=server.url, headers=server.headers if auth else {})


def start_run(server: ServerProcess, function: str = "ticker", **params: Any) -> dict[str, Any]:
    """Start a run through `POST /runs`; returns the 202 body."""
    with client(server) as http:
        response = http.post("/runs", json={"function": function, "params": params})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


LINK_FIELDS = frozenset({"stream_url", "view_url", "token", "token_expires_at"})
"""What `GET /runs/{id}` adds for the API key: a fresh run token, new at every call."""


def get_run(server: ServerProcess, run_id: str) -> dict[str, Any]:
    """The run record, without the fresh token the API key is handed (see `LINK_FIELDS`)."""
    with client(server) as http:
        response = http.get(f"/runs/{run_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return without_links(body)


def without_links(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key not in LINK_FIELDS}


def token_key(server: ServerProcess) -> bytes:
    """The key the server signs run tokens with, read from its SQLite file's `meta` table."""
    conn = sqlite3.connect(f"file:{server.db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'secret:run-token'").fetchone()
    finally:
        conn.close()
    assert row is not None, "the server has no run-token key yet"
    return bytes(row[0])


def list_runs(server: ServerProcess, **filters: Any) -> list[dict[str, Any]]:
    with client(server) as http:
        response = http.get("/runs", params=filters)
    assert response.status_code == 200, response.text
    runs: list[dict[str, Any]] = response.json()["runs"]
    return runs


def run_ids(server: ServerProcess) -> set[str]:
    return {run["id"] for run in list_runs(server, limit=1000)}


def wait_for_status(
    server: ServerProcess, run_id: str, *statuses: str, timeout: float = 15.0
) -> dict[str, Any]:
    """Wait until the run's status is one of `statuses`; returns the run."""

    def check() -> dict[str, Any] | None:
        run = get_run(server, run_id)
        return run if run["status"] in statuses else None

    return wait_until(check, timeout, what=f"run {run_id} to reach {statuses}")


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status and a readable title and detail."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    media_type = response.headers.get("content-type", "").split(";")[0].strip()
    assert media_type == PROBLEM_JSON, f"content-type {media_type!r}: {response.text}"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert isinstance(body.get("title"), str) and body["title"].strip(), body
    assert isinstance(body.get("detail"), str) and body["detail"].strip(), body
    return body


# --- webhooks -------------------------------------------------------------------------------


def webhook_secret(server: ServerProcess) -> str:
    """The secret the server generated and keeps beside its database."""
    return (server.db.parent / "webhook-secret").read_text(encoding="utf-8").strip()


def signed_headers(
    secret: str,
    body: bytes,
    *,
    msg_id: str | None = None,
    timestamp: datetime | None = None,
) -> dict[str, str]:
    """Standard Webhooks headers for `body`, signed the way any sender's library does."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = timestamp or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, timestamp, body.decode("utf-8"))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def json_bytes(value: Any) -> bytes:
    """JSON as a sender would send it: UTF-8, non-ASCII kept as is."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def post_webhook(
    server: ServerProcess,
    function: str,
    body: bytes,
    *,
    secret: str | None = None,
    **sign: Any,
) -> httpx.Response:
    headers = signed_headers(secret or webhook_secret(server), body, **sign)
    with http_client(base_url=server.url) as http:
        return http.post(f"/hooks/{function}", content=body, headers=headers)


# --- streams --------------------------------------------------------------------------------


def run_stream_url(server: ServerProcess, run_id: str) -> str:
    return f"{server.url}/runs/{run_id}/events"


# --- "nothing was written" ------------------------------------------------------------------


def assert_nothing_written(server: ServerProcess, known: set[str]) -> str:
    """No run and no event was added beyond the `known` runs.

    Checked twice, the way a user would see it: `GET /runs` lists exactly the known
    runs, and the global event stream, read up to a fresh sentinel run started now,
    holds events of no other run and exactly one `run.queued` per known run. Returns
    the sentinel's id (a run the caller should add to its known set).
    """
    assert run_ids(server) == known, "a refused request left a run behind"
    started = start_run(server, "ticker", count=0, interval_ms=0)
    sentinel = started["run_id"]
    # Let the sentinel finish first (its own stream ends when it does) so that nothing is in
    # flight when we hang up on the global stream: a hang-up while events are still arriving
    # can leave the server-side stream running (reported separately; not what this checks).
    assert read_stream(server.url + started["stream_url"]).ended

    def reached_sentinel(events: list[ParsedEvent], _parser: SSEParser) -> bool:
        return any(
            json.loads(event.data)["run_id"] == sentinel and event.event == "completed"
            for event in events
        )

    stream = read_stream(f"{server.url}/events", headers=server.headers, until=reached_sentinel)
    seen = [env["run_id"] for env in stream.envelopes]
    strangers = set(seen) - known - {sentinel}
    assert not strangers, f"the log holds events of runs nobody started: {strangers}"
    queued = [env["run_id"] for env in stream.envelopes if env["type"] == "run.queued"]
    assert sorted(queued) == sorted([*known, sentinel]), f"run.queued events: {queued}"
    return sentinel
