"""What an operator relies on, against a real `steplog serve`: limits, shutdown,
health, metrics and logs. (Behind nginx: test_nginx.py.)"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from typing import Any

import httpx

from tests.conftest import ServerFactory
from tests.support.api import (
    assert_problem,
    json_bytes,
    post_webhook,
    signed_headers,
    start_run,
    wait_for_status,
    webhook_secret,
)
from tests.support.probes import (
    metric,
    open_sockets,
    raw_request,
    read_response_head,
    read_until_closed,
)
from tests.support.sse import Follower, assert_contiguous, read_stream
from tests.support.wait import wait_until


class OpenStream:
    """A stream held open: its first bytes (the `retry:` line) are read, the rest waits."""

    def __init__(self, http: httpx.Client, url: str, **headers: str) -> None:
        self.response = http.send(http.build_request("GET", url, headers=headers), stream=True)
        self.status_code = self.response.status_code
        # Keep the iterator: dropping a half-read one closes the connection.
        self.chunks = self.response.iter_raw()
        if self.status_code == 200:
            next(self.chunks)
        else:
            self.response.read()

    def read_to_end(self) -> bytes:
        return b"".join(self.chunks)

    def close(self) -> None:
        self.response.close()


def open_stream(http: httpx.Client, url: str, **headers: str) -> OpenStream:
    return OpenStream(http, url, **headers)


def test_stream_caps_answer_429_with_retry_after(server_factory: ServerFactory) -> None:
    server = server_factory(ping_interval=1, workers=0, max_streams=3, max_streams_per_token=2)
    run = start_run(server, "ticker", count=1)
    by_token = server.url + run["stream_url"]
    with httpx.Client(timeout=10) as http:
        first, second = open_stream(http, by_token), open_stream(http, by_token)
        assert first.status_code == second.status_code == 200
        refused = open_stream(http, by_token).response
        body = assert_problem(refused, 429)
        assert body["reason"] == "token_cap" and refused.headers["Retry-After"] == "5"

        # The API key is held to the server-wide cap only: one more fits, then none.
        by_key = f"{server.url}/runs/{run['run_id']}/events"
        third = open_stream(http, by_key, **server.headers)
        assert third.status_code == 200
        full = open_stream(http, by_key, **server.headers).response
        assert assert_problem(full, 429)["reason"] == "server_cap"
        assert metric(server.url, "steplog_open_streams") == 3
        assert metric(server.url, "steplog_streams_refused_total", reason="token_cap") == 1
        assert metric(server.url, "steplog_streams_refused_total", reason="server_cap") == 1

        # A closed stream gives its slot back.
        first.close()
        wait_until(lambda: metric(server.url, "steplog_open_streams") == 2, 10, what="a slot")
        again = open_stream(http, by_token)
        assert again.status_code == 200
        for response in (second, third, again):
            response.close()
    wait_until(lambda: metric(server.url, "steplog_open_streams") == 0, 10, what="no streams")


def test_oversize_bodies_are_refused_before_they_are_sent(server_factory: ServerFactory) -> None:
    """413 as soon as the size is known: from Content-Length, or when a chunked body
    passes the limit. The client is answered while the rest of its body is unsent."""
    limit = 64 * 1024
    server = server_factory(max_body_bytes=limit)
    secret = webhook_secret(server)

    # Declared too large: answered after the headers alone.
    declared = (
        f"POST /runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {10 * limit}\r\n\r\n"
    ).encode()
    sock = raw_request(server.port, declared + b'{"function": "ticker", ')
    status, response = read_response_head(sock)
    sock.close()
    assert status == 413 and b"application/problem+json" in response, response

    # Chunked, no length: refused once the received part passes the limit.
    body = json_bytes({"count": 1, "pad": "x" * (2 * limit)})
    headers = signed_headers(secret, body)
    head = "POST /hooks/ticker HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    first_part = body[: limit + 1024]
    sock = raw_request(
        server.port, head.encode() + f"{len(first_part):x}\r\n".encode() + first_part + b"\r\n"
    )
    status, response = read_response_head(sock)
    sock.close()
    assert status == 413 and b"application/problem+json" in response, response
    assert metric(server.url, "steplog_webhook_rejections_total", reason="too_large") == 1
    with httpx.Client(base_url=server.url, headers=server.headers) as http:
        assert http.get("/runs").json()["runs"] == []  # nothing was written


def test_a_client_that_never_reads_is_dropped_while_others_keep_receiving(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(ping_interval=1, write_timeout=1)
    # 200 events of 100 kB, 20 ms apart: far more than the socket buffers hold.
    run = start_run(server, "ticker", count=200, interval_ms=20, payload_bytes=100_000)
    stuck = raw_request(
        server.port,
        f"GET {run['stream_url']} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        rcvbuf=64 * 1024,
    )
    reader = Follower(server.url + run["stream_url"]).start()

    dropped = "steplog_subscribers_dropped_slow_total"
    wait_until(
        lambda: metric(server.url, dropped, cause="write_timeout") == 1,
        20,
        what="the never-reading client to be dropped",
    )
    dropped_at = time.time()
    reader.join(30)
    envelopes = [r.envelope for r in reader.received]
    assert_contiguous(envelopes)
    assert envelopes[-1]["type"] == "run.succeeded" and len(reader.connections) == 1
    # The reader kept receiving after the other client was dropped.
    assert any(r.at > dropped_at for r in reader.received)
    assert metric(server.url, dropped, cause="buffer") == 0
    assert metric(server.url, "steplog_open_streams") == 0

    # The server let go of the stuck connection: what it still holds arrives, then the
    # connection ends (reset by the kernel's user timeout, or closed) without the run's end.
    data, how = read_until_closed(stuck)
    assert b"event: completed" not in data and how in {"reset", "eof"}, (len(data), how)
    stuck.close()
    if how == "reset":  # the kernel's user timeout ended it before we read the rest
        assert metric(server.url, "steplog_connections_aborted_total") == 1


def test_a_stream_ends_at_its_maximum_age_and_the_client_resumes(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(ping_interval=1, max_stream_seconds=2, retry_ms=100)
    run = start_run(server, "ticker", count=60, interval_ms=100)
    follower = Follower(server.url + run["stream_url"]).start()
    follower.join(30)
    first = follower.connections[0]
    lasted = first.received[-1].at - first.received[0].at
    assert first.ended and "stream lifetime reached, reconnect" in first.comments
    assert 1.0 < lasted < 3.5, lasted  # up to 10% early (jitter), plus a watchdog tick
    assert len(follower.connections) >= 2
    envelopes = [r.envelope for r in follower.received]
    assert_contiguous(envelopes)
    assert envelopes[-1]["type"] == "run.succeeded"
    assert metric(server.url, "steplog_streams_closed_total", reason="lifetime") >= 2


def test_sigterm_closes_streams_releases_runs_and_exits_in_time(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(ping_interval=1, workers=1, graceful_timeout=4, retry_ms=100)
    run = start_run(server, "ticker", count=100, interval_ms=100)
    wait_for_status(server, run["run_id"], "running")
    url = server.url + run["stream_url"]
    streams = [read_in_thread(url) for _ in range(3)]
    wait_until(lambda: metric(server.url, "steplog_open_streams") == 3, 10, what="3 streams")

    assert server.process is not None
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=10) == 0
    assert time.monotonic() - started < 4

    for thread, result in streams:
        thread.join(10)
        assert result["ended"] and "server shutting down, reconnect" in result["comments"]
    # The run was handed back at once: still running, but nobody's lease.
    with sqlite3.connect(server.db) as db:
        row = db.execute(
            "SELECT status, lease_owner, lease_expires_at FROM runs WHERE id = ?",
            (run["run_id"],),
        ).fetchone()
    assert row == ("running", None, 0), row


def read_in_thread(url: str) -> tuple[threading.Thread, dict[str, Any]]:
    """Read a stream on a thread until the server ends it."""
    result: dict[str, Any] = {}

    def read() -> None:
        stream = read_stream(url, timeout=30)
        result.update(ended=stream.ended, comments=stream.comments)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, result


def test_readiness_follows_the_log(server_factory: ServerFactory) -> None:
    server = server_factory(workers=2)
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["workers"] == "2 running"

    # Another process holds the write lock: reads still work, writes cannot commit.
    blocker = sqlite3.connect(server.db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        not_ready = httpx.get(f"{server.url}/readyz", timeout=10)
        body = assert_problem(not_ready, 503)
        assert body["checks"]["log"].startswith("ok"), body
        assert "did not commit" in body["checks"]["writable"], body
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    wait_until(
        lambda: httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200,
        20,
        what="ready again",
    )


def test_metrics_move_as_the_server_works(server_factory: ServerFactory) -> None:
    server = server_factory(ping_interval=1)
    before = metric(server.url, "steplog_events_appended_total")
    run = start_run(server, "ticker", count=5, interval_ms=300)
    url = server.url + run["stream_url"]
    with httpx.Client(timeout=10) as http:
        live = open_stream(http, url)
        assert metric(server.url, "steplog_open_streams") == 1
        live.read_to_end()  # the run's end ends the stream
    wait_for_status(server, run["run_id"], "succeeded")
    wait_until(lambda: metric(server.url, "steplog_open_streams") == 0, 10, what="closed")
    appended = metric(server.url, "steplog_events_appended_total") - before
    assert appended == 10  # queued, started, step.started, 5 ticks, step.completed, succeeded
    assert metric(server.url, "steplog_append_latency_seconds_count") >= 8
    assert metric(server.url, "steplog_runs", status="succeeded") == 1
    assert metric(server.url, "steplog_tail_lag_seconds_count") >= 1

    replayed = metric(server.url, "steplog_events_replayed_total")
    assert len(read_stream(url).events) == 10
    assert metric(server.url, "steplog_events_replayed_total") == replayed + 10

    bad = post_webhook(server, "ticker", b"{}", secret="whsec_" + "A" * 44)
    assert_problem(bad, 401)
    assert metric(server.url, "steplog_webhook_rejections_total", reason="bad_signature") == 1


def test_json_logs_have_one_line_per_request_and_transition_and_no_secrets(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(log_format="json", ping_interval=1)
    secret = webhook_secret(server)
    response = post_webhook(server, "ticker", json_bytes({"count": 2, "interval_ms": 10}))
    run = response.json()
    read_stream(server.url + run["stream_url"])  # the token travels in the query string
    httpx.get(f"{server.url}/runs", headers=server.headers)  # the API key in a header
    wait_for_status(server, run["run_id"], "succeeded")

    def lines() -> list[dict[str, object]]:
        text = server.log_path.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def stream_logged() -> bool:
        return any(line.get("path") == f"/runs/{run['run_id']}/events" for line in lines())

    wait_until(stream_logged, 10, what="the stream's request line")
    text = server.log_path.read_text(encoding="utf-8")
    for credential in (run["token"], server.api_key, secret, secret.removeprefix("whsec_")):
        assert credential not in text
    logged = lines()  # every line is JSON
    requests = [line for line in logged if line["logger"] == "steplog.http"]
    stream = next(r for r in requests if r["path"] == f"/runs/{run['run_id']}/events")
    assert stream["status"] == 200 and stream["complete"] is True and "?" not in str(stream)
    assert {"method": "POST", "path": "/hooks/ticker", "status": 202}.items() <= next(
        r for r in requests if r["path"] == "/hooks/ticker"
    ).items()
    transitions = [
        (line["event"], line["attempt"])
        for line in logged
        if line["logger"] == "steplog.runs" and line["run_id"] == run["run_id"]
    ]
    assert transitions == [("run.queued", 0), ("run.started", 1), ("run.succeeded", 1)]


def test_connections_closed_by_clients_are_released_at_once(server_factory: ServerFactory) -> None:
    """A client that opens a connection per request (a webhook sender, a script, a
    probe) and closes it leaves nothing behind: the server closes its end at once,
    not after the 75 s keep-alive timer, so churn cannot exhaust its descriptors."""
    server = server_factory()
    assert server.process is not None
    pid = server.process.pid
    with httpx.Client(base_url=server.url) as warm:
        warm.get("/healthz").raise_for_status()
    before = wait_until(lambda: open_sockets(pid) or None, what="the server's sockets")
    for _ in range(200):
        with httpx.Client(base_url=server.url) as once:  # a new connection, closed after
            assert once.get("/healthz").status_code == 200
    wait_until(
        lambda: open_sockets(pid) <= before + 2,
        timeout=5,
        what=f"the server to close the 200 connections (sockets before: {before})",
    )
