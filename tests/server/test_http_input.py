"""Hostile HTTP input gets a 4xx problem document, never a 500, and changes nothing.

Each case goes to a real `steplog serve` over a real socket. Where httpx would
refuse to send the input (a NUL or an over-long header, a raw control character
in a path), the request is written by hand on a plain socket.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from stream.http.json_depth import MAX_JSON_DEPTH
from tests.support.api import (
    PROBLEM_JSON,
    assert_nothing_written,
    assert_problem,
    client,
    http_client,
    post_webhook,
    run_ids,
    start_run,
    wait_for_status,
    webhook_secret,
)
from tests.support.launcher import ROOT, ServerProcess, free_port, stop_processes
from tests.support.sse import read_stream
from tests.support.wait import wait_until

# --- raw HTTP/1.1 on a socket ---------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self, status: int) -> dict[str, Any]:
        """The body as a problem document with this status (as `assert_problem` checks)."""
        assert self.status == status, f"{self.status}: {self.headers} {self.body!r}"
        assert self.headers.get("content-type") == PROBLEM_JSON, self.headers
        assert int(self.headers["content-length"]) == len(self.body), self.headers
        body: dict[str, Any] = json.loads(self.body)
        assert body["status"] == status, body
        assert body["title"].strip() and body["detail"].strip(), body
        return body


def raw_request(port: int, request: bytes, timeout: float = 10.0) -> RawResponse:
    """Send `request` as is and read the answer until the server closes the connection.

    A response still going after `timeout` seconds (a stream that should have been
    refused) is returned as far as it got.
    """
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        received = bytearray()
        while time.monotonic() < deadline and (chunk := sock.recv(65536)):
            received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(status_line.split()[1]), headers, body)


def get(path: bytes, *extra_headers: bytes) -> bytes:
    """A GET request line and headers, ending the connection after the answer."""
    lines = [b"GET " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    return b"\r\n".join([*lines, *extra_headers, b"", b""])


# --- 1. JSON nested too deeply --------------------------------------------------------------


def nested(depth: int, inner: str = "") -> str:
    """`depth` arrays, one inside the other."""
    return "[" * depth + inner + "]" * depth


def run_body(params_json: str) -> bytes:
    return ('{"function": "ticker", "params": ' + params_json + "}").encode()


def assert_depth_refusal(response: httpx.Response) -> None:
    body = assert_problem(response, 422)
    assert str(MAX_JSON_DEPTH) in body["detail"], body
    assert "deep" in f"{body['title']} {body['detail']}".lower(), body


def test_deeply_nested_json_is_refused_and_changes_nothing(server: ServerProcess) -> None:
    secret = webhook_secret(server)
    known: set[str] = set()
    # Values far past the limit, and just past it (the top-level object counts as a level).
    for depth in (1000, MAX_JSON_DEPTH):
        deep_params = '{"count": 1, "x": ' + nested(depth) + "}"
        with client(server) as http:
            runs = http.post(
                "/runs", content=run_body(deep_params), headers={"Content-Type": "application/json"}
            )
        assert_depth_refusal(runs)
        assert_depth_refusal(post_webhook(server, "ticker", deep_params.encode(), secret=secret))
        known.add(assert_nothing_written(server, known))

    # A body nearly as large as the server accepts, all of it one nesting: refused as
    # quickly, without the parser (or the check) recursing through it.
    huge = nested(500_000).encode()
    started = time.monotonic()
    assert_depth_refusal(post_webhook(server, "ticker", huge, secret=secret))
    with client(server) as http:
        assert_depth_refusal(
            http.post("/runs", content=huge, headers={"Content-Type": "application/json"})
        )
    assert time.monotonic() - started < 30  # generous: a stack blow-up or a hang fails here
    assert run_ids(server) == known


def test_json_exactly_at_the_depth_limit_is_parsed(server: ServerProcess) -> None:
    """At the limit the body is parsed and validated as usual; brackets in strings don't count."""
    at_limit = '{"count": 1, "x": ' + nested(MAX_JSON_DEPTH - 1) + "}"
    in_a_string = json.dumps({"count": 1, "x": nested(1000)})
    for params in (at_limit, in_a_string):
        response = post_webhook(server, "ticker", params.encode())
        body = assert_problem(response, 422)
        assert [(e["loc"], e["type"]) for e in body["errors"]] == [(["x"], "extra_forbidden")]
    # A run's params sit one level down in POST /runs: the same params are one level deeper.
    with client(server) as http:
        response = http.post(
            "/runs",
            content=run_body('{"count": 1, "x": ' + nested(MAX_JSON_DEPTH - 2) + "}"),
            headers={"Content-Type": "application/json"},
        )
    assert assert_problem(response, 422)["errors"][0]["type"] == "extra_forbidden"


# --- 2. integers in the query and in Last-Event-ID ------------------------------------------

BAD_INTEGERS = {
    "superscript two": "\u00b2",
    "circled one": "\u2460",
    "Arabic-Indic ten": "\u0661\u0660",
    "fullwidth five": "\uff15",
    "plus sign": "+5",
    "minus sign": "-1",
    "leading space": " 5",
    "trailing space": "5 ",
    "no-break space": "\u00a05",
    "underscore": "1_0",
    "decimal": "1.0",
    "5,000 digits": "9" * 5000,
    "past 2**63": str(2**64),
}


def test_integer_parameters_accept_ascii_digits_only(
    server: ServerProcess, subtests: pytest.Subtests
) -> None:
    run = start_run(server, "ticker", count=1, interval_ms=0)
    run_id = run["run_id"]
    wait_for_status(server, run_id, "succeeded")
    known = run_ids(server)
    targets = [
        ("/runs", "limit"),
        (f"/runs/{run_id}/log", "after"),
        (f"/runs/{run_id}/log", "limit"),
        (f"/runs/{run_id}/events", "last_event_id"),
        ("/events", "last_event_id"),
    ]
    with client(server) as http:
        for path, name in targets:
            for case, value in BAD_INTEGERS.items():
                with subtests.test(msg=f"{path}?{name}= {case}"):
                    # A stream that took the value would never end: read only the status.
                    with http.stream("GET", path, params={name: value}) as response:
                        assert response.status_code == 400, f"{response.status_code} for {value!r}"
                        response.read()
                    body = assert_problem(response, 400)
                    assert name in body["detail"], body

        # The header too (latin-1 on the wire: a superscript digit and a no-break space fit).
        for case, header in {"superscript": b"\xb2", "no-break space": b"\xa05"}.items():
            for path in (f"/runs/{run_id}/events", "/events"):
                with subtests.test(msg=f"{path} Last-Event-ID {case}"):
                    auth = b"Authorization: " + server.headers["Authorization"].encode()
                    request = get(path.encode(), auth, b"Last-Event-ID: " + header)
                    raw = raw_request(server.port, request)
                    assert "Last-Event-ID" in raw.problem(400)["detail"]

        # Plain ASCII digits within the bounds still work.
        assert http.get("/runs", params={"limit": "1000"}).status_code == 200
        log = http.get(f"/runs/{run_id}/log", params={"after": "0", "limit": "5000"})
        assert log.status_code == 200, log.text
    assert run_ids(server) == known


# --- 3. a signed webhook whose body is not UTF-8 --------------------------------------------


def sign_bytes(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks signature, computed over the body's bytes as the spec says."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def test_signed_webhook_that_is_not_utf8_is_a_400_naming_the_encoding(
    server: ServerProcess,
) -> None:
    secret = webhook_secret(server)
    body = b'{"count": 1, "note": "caf\xe9"}'  # Latin-1, not UTF-8
    msg_id, now = f"msg_{uuid.uuid4().hex}", int(datetime.now(UTC).timestamp())
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(now),
        "webhook-signature": sign_bytes(secret, msg_id, now, body),
        "content-type": "application/json",
    }
    with http_client(base_url=server.url) as http:
        signed = http.post("/hooks/ticker", content=body, headers=headers)
        tampered = http.post("/hooks/ticker", content=body + b" ", headers=headers)
        other_secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        headers["webhook-signature"] = sign_bytes(other_secret, msg_id, now, body)
        forged = http.post("/hooks/ticker", content=body, headers=headers)

    problem = assert_problem(signed, 400)
    assert "UTF-8" in problem["detail"], problem
    # The signature is still checked first: an unsigned sender learns nothing about the body.
    assert_problem(tampered, 401)
    assert_problem(forged, 401)
    assert_nothing_written(server, set())


# --- 4. errors Hypercorn answers before the app ---------------------------------------------

NUL_HEADER = b"X-Note: a\x00b"
HUGE_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 20_000
"""Over Hypercorn's 16 KiB limit for a request head, and not yet ended by a blank line: h11
enforces the limit on a head still incomplete (a whole head read in one go is parsed)."""


def assert_server_errors_are_problems(port: int) -> None:
    too_large = raw_request(port, HUGE_HEAD).problem(431)
    assert "header" in too_large["detail"].lower(), too_large
    # The same limit when the whole head arrives in one piece (h11 alone lets it through).
    whole = raw_request(port, get(b"/healthz", b"X-Padding: " + b"a" * 20_000)).problem(431)
    assert "16384 bytes" in whole["detail"], whole
    malformed = raw_request(port, get(b"/healthz", NUL_HEADER)).problem(400)
    assert "HTTP" in malformed["detail"], malformed
    # The connection was closed after each; a good request on a new one is served as usual.
    assert raw_request(port, get(b"/healthz")).status == 200


def test_server_level_errors_carry_a_problem_body(server: ServerProcess) -> None:
    assert_server_errors_are_problems(server.port)


@pytest.fixture
def asgi_server(tmp_path: Path) -> Iterator[int]:
    """`stream.asgi:app` under Hypercorn's own CLI with infra/hypercorn.toml; yields its port."""
    port = free_port()
    env = {
        **os.environ,
        "STEPLOG_DB": str(tmp_path / "steplog.db"),
        "STEPLOG_WORKERS": "0",
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "hypercorn.log"
    command = [sys.executable, "-m", "hypercorn", "--config", str(ROOT / "infra/hypercorn.toml")]
    proc = subprocess.Popen(
        [*command, "--bind", f"127.0.0.1:{port}", "stream.asgi:app"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(healthy, 30, what="hypercorn stream.asgi:app to answer")
        yield port
    finally:
        stop_processes([proc])


def test_server_level_errors_carry_a_problem_body_under_hypercorn_cli(asgi_server: int) -> None:
    assert_server_errors_are_problems(asgi_server)


# --- 5. the global stream's cursor ahead of the log -----------------------------------------


def test_global_cursor_ahead_of_the_log_is_refused_naming_the_head(server: ServerProcess) -> None:
    run_id = start_run(server, "ticker", count=1, interval_ms=0)["run_id"]
    wait_for_status(server, run_id, "succeeded")
    with client(server) as http:
        head = http.get("/runs").json()["head"]
        assert head > 0
        for ahead in ({"Last-Event-ID": str(head + 1)}, {"Last-Event-ID": "999999"}):
            with http.stream("GET", "/events", headers=ahead) as response:
                assert response.status_code == 400, f"{response.status_code} for {ahead}"
                response.read()
            body = assert_problem(response, 400)
            assert str(head) in body["detail"], body
        with http.stream("GET", "/events", params={"last_event_id": str(head + 5)}) as response:
            assert response.status_code == 400
            response.read()
        assert str(head) in assert_problem(response, 400)["detail"]

    # At the head exactly is fine: the stream opens and waits for what comes next.
    opened = read_stream(
        f"{server.url}/events",
        headers={**server.headers, "Last-Event-ID": str(head)},
        until=lambda _events, parser: parser.retry is not None,
    )
    assert opened.status == 200 and opened.events == []


# --- 6. control characters in the text log --------------------------------------------------


def test_control_characters_cannot_forge_or_colour_text_log_lines(server: ServerProcess) -> None:
    marker = uuid.uuid4().hex
    forged = f"/{marker}/a%0D%0A2099-01-01%2000:00:00,000%20INFO%20steplog.http:%20forged"
    paths = [
        forged,
        f"/{marker}/b%00nul",
        f"/{marker}/c%1B[31mred%1B[0m",
        f"/{marker}/d%C2%9B31m%E2%80%A8sep",  # C1 CSI and U+2028, as UTF-8
    ]
    for path in paths:
        assert raw_request(server.port, get(path.encode())).status == 404
    # Header fields that reach the log line (X-Request-ID), with an 8-bit CSI (obs-text).
    probe = get(f"/{marker}/e".encode(), b"X-Request-ID: id\x9b31m")
    assert raw_request(server.port, probe).status == 404

    def logged() -> list[bytes] | None:
        lines = [
            line for line in server.log_path.read_bytes().splitlines() if marker.encode() in line
        ]
        return lines if len(lines) >= len(paths) + 1 else None

    lines = wait_until(logged, 15, what="the request lines in the server log")
    text = server.log_path.read_bytes()
    assert not any(line.startswith(b"2099-01-01") for line in text.split(b"\n")), "a forged line"
    assert b"\r" not in text and b"\x00" not in text and b"\x1b" not in text
    assert "\u009b".encode() not in text and "\u2028".encode() not in text
    assert len(lines) == len(paths) + 1  # one line per request, each still on its own line
    assert any(b"\\r\\n2099-01-01" in line for line in lines), lines
