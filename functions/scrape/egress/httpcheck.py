"""Per-request path checks for tunnels to hosts allowed only under a path prefix.

The egress proxy sees connections, not requests; for a host the allow-list opens
only under a prefix (the app's own `/demo`, never its `/metrics` beside it), that
is not enough: a redirect hop, which route interception never sees, could point
the browser at any path on that host:port. So on such a tunnel the proxy reads
each HTTP/1 request head before a byte of it goes upstream, checks its path, and
forwards the request and its `Content-Length` body; the next head is checked the
same way. What it cannot follow it refuses: TLS (the path is encrypted), chunked
request bodies (Chromium sends them only for streaming uploads), a head over 64 KiB.
After an accepted `Upgrade` (a WebSocket) the tunnel is piped as is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlsplit

TLS_HANDSHAKE = 0x16
FORBIDDEN = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
CHUNK = 64 * 1024


class RequestRefused(Exception):
    """A request on a checked tunnel that may not go upstream; `path` is what it asked for."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


def request_path(target: str) -> str:
    """The path of a request-target (origin-form `/a?b`, or absolute-form `http://h/a`)."""
    if target.startswith("/"):
        return target.partition("?")[0].partition("#")[0]
    return urlsplit(target).path or "/"


async def forward_requests(
    client: asyncio.StreamReader,
    upstream: asyncio.StreamWriter,
    refusal: Callable[[str], str | None],
) -> None:
    """Forward requests one by one, each only once `refusal(path)` found nothing against it."""
    while True:
        try:
            first = await client.readexactly(1)
        except asyncio.IncompleteReadError:
            return  # the browser closed the connection between requests
        if first[0] == TLS_HANDSHAKE:
            raise RequestRefused("?", "TLS hides the path, and only some paths are allowed here")
        try:
            head = first + await client.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise RequestRefused("?", "a request head over 64 KiB") from None
        except asyncio.IncompleteReadError:
            return
        line, _, rest = head.partition(b"\r\n")
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise RequestRefused("?", "not an HTTP/1 request")
        path = request_path(parts[1].decode("latin-1"))
        if (reason := refusal(path)) is not None:
            raise RequestRefused(path, reason)
        fields = _fields(rest)
        if "transfer-encoding" in fields:
            raise RequestRefused(path, "a chunked request body")
        try:
            length = int(fields.get("content-length", "0"))
        except ValueError:
            raise RequestRefused(path, "a bad Content-Length") from None
        upstream.write(head)
        while length > 0:
            chunk = await client.read(min(length, CHUNK))
            if not chunk:
                return
            upstream.write(chunk)
            length -= len(chunk)
        await upstream.drain()
        if "upgrade" in fields.get("connection", "").lower():
            while chunk := await client.read(CHUNK):  # a WebSocket now: frames, not requests
                upstream.write(chunk)
                await upstream.drain()
            return


def _fields(block: bytes) -> dict[str, str]:
    found: dict[str, str] = {}
    for raw in block.split(b"\r\n"):
        name, colon, value = raw.partition(b":")
        if colon:
            key = name.strip().decode("latin-1").lower()
            text = value.strip().decode("latin-1")
            found[key] = f"{found[key]}, {text}" if key in found else text
    return found
