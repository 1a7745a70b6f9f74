"""`POST /hooks/{function}`: Standard Webhooks intake against a real server.

A signed webhook starts a run and hands back everything a caller needs to watch
it; anything wrong with the request is refused with a problem document and
leaves no trace in the log.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.api import (
    assert_nothing_written,
    assert_problem,
    get_run,
    http_client,
    json_bytes,
    post_webhook,
    run_ids,
    signed_headers,
    wait_for_status,
    webhook_secret,
    without_links,
)
from tests.support.launcher import ServerProcess
from tests.support.sse import read_stream

TICKS = json_bytes({"count": 3, "interval_ms": 0})


def test_signed_webhook_starts_a_run_that_can_be_watched(server: ServerProcess) -> None:
    response = post_webhook(server, "ticker", TICKS)

    assert response.status_code == 202, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"run_id", "status", "stream_url", "view_url", "token", "token_expires_at"}
    run_id, token = body["run_id"], body["token"]
    assert body["status"] == "queued"
    assert response.headers["location"] == f"/runs/{run_id}"
    assert body["stream_url"] == f"/runs/{run_id}/events?token={token}"
    assert body["view_url"] == f"/runs/{run_id}?token={token}"

    # The stream URL works as handed out, with no other credential.
    stream = read_stream(server.url + body["stream_url"])
    assert stream.ended
    assert [env["type"] for env in stream.envelopes] == [
        "run.queued",
        "run.started",
        "step.started",
        "step.progress",
        "step.progress",
        "step.progress",
        "step.completed",
        "run.succeeded",
    ]
    assert stream.events[-1].event == "completed"

    # So does the view URL.
    with http_client() as http:
        view = http.get(server.url + body["view_url"])
    assert view.status_code == 200, view.text
    run = view.json()
    assert run["id"] == run_id
    assert run["function"] == "ticker"
    assert run["params"]["count"] == 3
    assert run["status"] == "succeeded"
    assert run["result"] == {"ticks": 3}


def test_replayed_webhook_id_returns_the_same_run(server: ServerProcess) -> None:
    msg_id = f"msg_{secrets.token_hex(8)}"
    first = post_webhook(server, "ticker", TICKS, msg_id=msg_id)
    assert first.status_code == 202, first.text
    run_id = first.json()["run_id"]
    wait_for_status(server, run_id, "succeeded")

    # The sender retries the same delivery later: newly timestamped and signed.
    again = post_webhook(
        server, "ticker", TICKS, msg_id=msg_id, timestamp=datetime.now(UTC) + timedelta(seconds=5)
    )

    assert again.status_code == 200, again.text
    # The same run, with a token of its own (minted now, so its expiry may be later).
    assert without_links(again.json()) == without_links(first.json()) | {"status": "succeeded"}
    assert set(again.json()) == set(first.json())
    assert again.headers["location"] == f"/runs/{run_id}"
    assert run_ids(server) == {run_id}
    assert get_run(server, run_id)["attempt"] == 1  # the run was not started again
    assert_nothing_written(server, {run_id})


def test_webhook_id_reused_for_another_request_is_refused(server: ServerProcess) -> None:
    """Only a true replay gets the run back: another body or another function under the
    same `webhook-id` is a 422 naming the key and what differs, and writes nothing."""
    msg_id = f"msg_{secrets.token_hex(8)}"
    first = post_webhook(server, "ticker", TICKS, msg_id=msg_id)
    assert first.status_code == 202, first.text
    run_id = first.json()["run_id"]
    # The same params in another order (and re-signed): a replay.
    reordered = post_webhook(server, "ticker", json_bytes({"interval_ms": 0, "count": 3}),
                             msg_id=msg_id)  # fmt: skip
    assert reordered.status_code == 200, reordered.text
    assert reordered.json()["run_id"] == run_id

    other_body = post_webhook(
        server, "ticker", json_bytes({"count": 4, "interval_ms": 0}), msg_id=msg_id
    )
    body = assert_problem(other_body, 422)
    assert body["reason"] == "idempotency_conflict"
    assert (body["idempotency_key"], body["differs"]) == (msg_id, "params")
    assert msg_id in body["detail"] and "params" in body["detail"]

    scrape = json_bytes(
        {
            "url": "https://example.org/in/ada",
            "credentials": {"username": "ada", "password": "pw-7f3q"},
        }
    )
    other_function = post_webhook(server, "scrape", scrape, msg_id=msg_id)
    body = assert_problem(other_function, 422)
    assert (body["reason"], body["idempotency_key"], body["differs"]) == (
        "idempotency_conflict", msg_id, "function",
    )  # fmt: skip
    assert "scrape" in body["detail"] and "ticker" in body["detail"]
    assert "pw-7f3q" not in other_function.text

    wait_for_status(server, run_id, "succeeded")
    assert get_run(server, run_id)["params"]["count"] == 3
    assert_nothing_written(server, {run_id})
    with http_client() as http:
        exposition = http.get(f"{server.url}/metrics").text
    assert 'steplog_webhook_rejections_total{reason="idempotency_conflict"} 2.0' in exposition


# --- refusals -------------------------------------------------------------------------------


def other_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def unsigned(server: ServerProcess, body: bytes, drop: tuple[str, ...]) -> httpx.Response:
    headers = signed_headers(webhook_secret(server), body)
    for name in drop:
        del headers[name]
    with http_client(base_url=server.url) as http:
        return http.post("/hooks/ticker", content=body, headers=headers)


def tampered(server: ServerProcess) -> httpx.Response:
    headers = signed_headers(webhook_secret(server), TICKS)
    with http_client(base_url=server.url) as http:
        return http.post("/hooks/ticker", content=json_bytes({"count": 9999}), headers=headers)


def unsigned_unknown_function(server: ServerProcess) -> httpx.Response:
    """Unauthenticated callers learn nothing, not even which functions exist."""
    with http_client(base_url=server.url) as http:
        return http.post("/hooks/no-such-function", content=TICKS)


@dataclass(frozen=True)
class Refusal:
    send: Callable[[ServerProcess], httpx.Response]
    status: int
    check: Callable[[dict[str, Any]], None] = lambda body: None


def field_error(loc: list[Any], kind: str) -> Callable[[dict[str, Any]], None]:
    def check(body: dict[str, Any]) -> None:
        errors = body.get("errors")
        assert isinstance(errors, list) and errors, body
        assert any(e["loc"] == loc and e["type"] == kind for e in errors), errors

    return check


def mentions(*words: str) -> Callable[[dict[str, Any]], None]:
    def check(body: dict[str, Any]) -> None:
        text = f"{body['title']} {body['detail']}".lower()
        assert all(word.lower() in text for word in words), body

    return check


SIX_MINUTES_AGO = timedelta(minutes=-6)

REFUSALS: dict[str, Refusal] = {
    "signed with another secret": Refusal(
        lambda s: post_webhook(s, "ticker", TICKS, secret=other_secret()), 401, mentions("sign")
    ),
    "body changed after signing": Refusal(tampered, 401, mentions("signature")),
    "no signature headers at all": Refusal(
        lambda s: unsigned(s, TICKS, ("webhook-id", "webhook-timestamp", "webhook-signature")),
        401,
        mentions("header"),
    ),
    "no webhook-signature header": Refusal(
        lambda s: unsigned(s, TICKS, ("webhook-signature",)), 401, mentions("header")
    ),
    "no webhook-id header": Refusal(
        lambda s: unsigned(s, TICKS, ("webhook-id",)), 401, mentions("header")
    ),
    "timestamp older than 5 minutes": Refusal(
        lambda s: post_webhook(s, "ticker", TICKS, timestamp=datetime.now(UTC) + SIX_MINUTES_AGO),
        401,
        mentions("old"),
    ),
    "timestamp more than 5 minutes ahead": Refusal(
        lambda s: post_webhook(s, "ticker", TICKS, timestamp=datetime.now(UTC) - SIX_MINUTES_AGO),
        401,
        mentions("new"),
    ),
    "unknown function, unsigned": Refusal(unsigned_unknown_function, 401),
    "unknown function": Refusal(
        lambda s: post_webhook(s, "no-such-function", TICKS), 404, mentions("no-such-function")
    ),
    "malformed JSON": Refusal(
        lambda s: post_webhook(s, "ticker", b'{"count": 3,'), 400, mentions("JSON")
    ),
    "JSON that is not an object": Refusal(
        lambda s: post_webhook(s, "ticker", b"[1, 2, 3]"), 422, mentions("object")
    ),
    "count = -1": Refusal(
        lambda s: post_webhook(s, "ticker", json_bytes({"count": -1})),
        422,
        field_error(["count"], "greater_than_equal"),
    ),
    "count of the wrong type": Refusal(
        lambda s: post_webhook(s, "ticker", json_bytes({"count": "many"})),
        422,
        field_error(["count"], "int_parsing"),
    ),
    "unknown param field": Refusal(
        lambda s: post_webhook(s, "ticker", json_bytes({"count": 1, "colour": "red"})),
        422,
        field_error(["colour"], "extra_forbidden"),
    ),
    "body over 1 MiB": Refusal(
        lambda s: post_webhook(
            s, "ticker", json_bytes({"count": 1, "pad": "x" * (1024 * 1024 + 1)})
        ),
        413,
        mentions("larger"),
    ),
}


def test_bad_webhooks_are_refused_and_change_nothing(
    server: ServerProcess, subtests: pytest.Subtests
) -> None:
    """One server for every case (a server per case would triple the suite's time)."""
    for case, refusal in REFUSALS.items():
        with subtests.test(msg=case):
            before = run_ids(server)

            response = refusal.send(server)

            body = assert_problem(response, refusal.status)
            refusal.check(body)
            assert_nothing_written(server, before)
