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
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from stream.json_depth import MAX_JSON_DEPTH
from stream.launcher import ServerProcess
from tests.integration.helpers import (
    PROBLEM_JSON,
    assert_nothing_written,
    assert_problem,
    client,
    http_client,
    post_webhook,
    run_ids,
    webhook_secret,
)

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
