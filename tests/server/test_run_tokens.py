"""Run tokens against a real server: they expire, the API key mints fresh ones, and
rotating the key revokes them all.

Expired tokens are minted with an expiry in the past, with the key the server keeps
in its own log (read from the SQLite file), so no test waits for a week to pass.
Only the test of a stream cut at its token's expiry lets a few real seconds go by:
that is the behaviour under test.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime

import httpx

from stream.http.tokens import mint
from tests.conftest import ServerFactory
from tests.support.api import assert_problem, http_client, start_run, token_key, wait_for_status
from tests.support.launcher import ROOT, ServerProcess
from tests.support.sse import read_stream
from tests.support.wait import wait_until


def fresh_links(server: ServerProcess, run_id: str) -> dict[str, str]:
    """What `GET /runs/{id}` hands the API key: a new token and the URLs carrying it."""
    with http_client(base_url=server.url, headers=server.headers) as http:
        response = http.get(f"/runs/{run_id}")
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


def as_holder(server: ServerProcess, path: str) -> httpx.Response:
    """GET `path` (with its `?token=`) as a token holder would: no API key."""
    with http_client(base_url=server.url) as http:
        return http.get(path, headers={"Accept": "application/json"})


def test_the_api_key_gets_a_fresh_view_url_that_works(server_factory: ServerFactory) -> None:
    server = server_factory(token_ttl=3600, ping_interval=1, poll_interval=0.2)
    run_id = start_run(server, "ticker", count=2, interval_ms=0)["run_id"]
    wait_for_status(server, run_id, "succeeded")
    expired = mint(token_key(server), run_id, int(time.time()) - 1).value
    refused = as_holder(server, f"/runs/{run_id}?token={expired}")
    assert assert_problem(refused, 401)["reason"] == "token_expired"

    before = time.time()
    links = fresh_links(server, run_id)
    after = time.time()
    token = links["token"]
    assert links["view_url"] == f"/runs/{run_id}?token={token}"
    assert links["stream_url"] == f"/runs/{run_id}/events?token={token}"
    expires = datetime.fromisoformat(links["token_expires_at"].replace("Z", "+00:00"))
    assert before + 3600 <= expires.timestamp() <= after + 3600 + 1  # STEPLOG_TOKEN_TTL

    view = as_holder(server, links["view_url"])
    assert view.status_code == 200, view.text
    assert view.json()["id"] == run_id
    assert "view_url" not in view.json()  # a token cannot renew itself
    stream = read_stream(server.url + links["stream_url"])
    assert stream.status == 200 and stream.ended
    assert stream.envelopes[-1]["type"] == "run.succeeded"


def test_rotating_the_token_key_revokes_every_token(server: ServerProcess) -> None:
    started = start_run(server, "ticker", count=1, interval_ms=0)
    run_id = started["run_id"]
    wait_for_status(server, run_id, "succeeded")
    assert as_holder(server, started["view_url"]).status_code == 200

    rotated = subprocess.run(
        [sys.executable, "-m", "stream", "tokens", "rotate", "--db", str(server.db)],
        cwd=ROOT,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rotated.returncode == 0, rotated.stderr
    assert "rotated" in rotated.stdout

    # The running server re-reads the key every few seconds: no restart needed.
    refused = wait_until(
        lambda: (r := as_holder(server, started["view_url"])).status_code == 403 and r,
        timeout=30,
        what="the old token to be refused",
    )
    assert_problem(refused, 403)  # revoked is not expired: the token is simply no good
    assert_problem(as_holder(server, started["stream_url"]), 403)
    with http_client(base_url=server.url) as http:
        cancel = http.post(f"/runs/{run_id}/cancel", params={"token": started["token"]})
    assert_problem(cancel, 403)

    links = fresh_links(server, run_id)
    assert links["token"] != started["token"]
    assert as_holder(server, links["view_url"]).status_code == 200
    assert read_stream(server.url + links["stream_url"]).ended


def test_a_stream_ends_when_its_token_expires(server_factory: ServerFactory) -> None:
    """An open stream does not outlive its token: it ends like at its lifetime, and
    the client's reconnect is answered 401 token_expired."""
    server = server_factory(token_ttl=5, ping_interval=1, poll_interval=0.2)
    started = start_run(server, "ticker", count=600, interval_ms=100)  # a minute of ticks
    stream = read_stream(server.url + started["stream_url"], timeout=60)
    assert stream.status == 200, stream.raw
    assert stream.ended  # the server ended it, long before the run's end
    assert stream.envelopes and stream.envelopes[-1]["type"] == "step.progress"
    assert "stream lifetime reached, reconnect" in stream.comments

    last = stream.envelopes[-1]["seq"]
    again = read_stream(
        server.url + started["stream_url"], headers={"Last-Event-ID": str(last)}, timeout=30
    )
    assert again.status == 401
    assert b'"reason":"token_expired"' in again.raw.replace(b" ", b"")
    # The API key still follows the run; the run itself never noticed.
    assert wait_for_status(server, started["run_id"], "running")["status"] == "running"
