"""A problem document on the errors Hypercorn answers itself, before the app runs.

When h11 cannot parse a request (request line and headers over
`h11_max_incomplete_size`: 431; a NUL or other forbidden byte in a header, a
malformed request line: 400; an unknown transfer coding: 501), Hypercorn's
HTTP/1.1 protocol answers from `H11Protocol._send_error_response` with an empty
body and closes the connection; the app never sees the request. `install()`
replaces that one method so the answer carries a problem document like every
other error here. Status, `Connection: close`, Hypercorn's own response headers
and the closing of the connection stay as they were.

Applied by `steplog serve` and by `stream.asgi` (under Hypercorn's CLI), once;
if a Hypercorn release drops the method, `install()` logs a warning and those
answers simply keep their empty bodies.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import cast

import h11
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    HTTPScope,
    Scope,
)

from stream.http.problems import PROBLEM_TYPE, problem_body

log = logging.getLogger("steplog.serve")

_INSTALLED = "_steplog_problem_errors"

DETAILS = {
    400: "the request is not valid HTTP/1.1 (a malformed request line, or a header holding"
    " a forbidden character such as NUL, CR or LF)",
    431: "the request line and headers are larger than {limit} bytes",
    501: "the request uses a transfer coding this server does not implement",
}


def error_body(status: int, head_limit: int) -> bytes:
    """The problem document for a protocol error with this status."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Bad request"
    detail = DETAILS.get(status, title).format(limit=head_limit)
    return problem_body(status, title, detail).encode()


def install() -> None:
    """Patch Hypercorn's HTTP/1.1 protocol (idempotent)."""
    if getattr(H11Protocol, _INSTALLED, False):
        return
    if not hasattr(H11Protocol, "_send_error_response"):
        log.warning("Hypercorn has no H11Protocol._send_error_response: its errors stay bodiless")
        return

    async def send_error_response(self: H11Protocol, status_code: int) -> None:
        body = error_body(status_code, self.config.h11_max_incomplete_size)
        headers = [
            (b"content-type", PROBLEM_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *self.config.response_headers("h11"),
        ]
        await self._send_h11_event(h11.Response(status_code=status_code, headers=headers))
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())

    H11Protocol._send_error_response = send_error_response  # type: ignore[method-assign]
    setattr(H11Protocol, _INSTALLED, True)


MAX_HEAD_BYTES = 16 * 1024
"""The largest request line plus headers a request may have: Hypercorn's default
`h11_max_incomplete_size`, which infra/hypercorn.toml sets to the same value."""


class HeadLimit:
    """ASGI middleware: a request whose line and headers pass `MAX_HEAD_BYTES` gets 431.

    h11 enforces its limit only on a head still incomplete in its buffer, so a larger
    head that arrives whole in one read (Hypercorn reads up to 64 KiB at a time) would
    be served. Counting it once it is parsed makes the limit the same however the
    bytes arrive.
    """

    def __init__(self, app: ASGIFramework, limit: int = MAX_HEAD_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "http" and head_size(scope) > self.limit:
            body = error_body(431, self.limit)
            await send(
                {
                    "type": "http.response.start",
                    "status": 431,
                    "headers": [
                        (b"content-type", PROBLEM_TYPE.encode()),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        await self.app(scope, receive, send)


def head_size(scope: Scope) -> int:
    """About the bytes of the request line and headers (each header line with `: ` and CRLF)."""
    http = cast(HTTPScope, scope)
    line = len(http.get("raw_path") or b"") + len(http.get("query_string") or b"") + 16
    return line + sum(len(name) + len(value) + 4 for name, value in http.get("headers", ()))
