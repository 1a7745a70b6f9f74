"""A minimal raw-socket HTTP/1.1 client for reading SSE responses in the benchmark.

Why not httpx: the benchmark holds 1,000 concurrent streams open in one process and
reads a 100,000-event replay as fast as the server can send it. Each httpx stream
carries a pool, a response object and several layers of async iterators; here a
stream is one `asyncio.open_connection` pair and a tiny chunked-encoding decoder,
so the client is never the thing being measured.

Only what the benchmark needs is implemented: one GET per connection, a status
line and headers, then a body that is either `Transfer-Encoding: chunked` (what
Hypercorn sends for streams) or has a `Content-Length`, or runs until EOF.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

READ_SIZE = 256 * 1024
"""Bytes asked of the socket per read: large, so a fast replay costs few wake-ups."""


class HTTPError(Exception):
    """The server answered in a way the benchmark cannot use (status, framing)."""


class ChunkedDecoder:
    """Incremental decoder for `Transfer-Encoding: chunked` bodies.

    Bytes are fed as they arrive (split anywhere, including inside a size line or
    the CRLF after a chunk); `feed` returns the body bytes they completed.
    `done` turns true at the terminating zero-size chunk.
    """

    __slots__ = ("_buf", "_need_crlf", "_remaining", "done")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._remaining = 0  # body bytes still to come in the current chunk
        self._need_crlf = False  # the CRLF that follows a chunk's data
        self.done = False

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return b""
        # Fast path: all of `data` is inside the current chunk (common for big replays).
        if not self._buf and self._remaining >= len(data):
            self._remaining -= len(data)
            if self._remaining == 0:
                self._need_crlf = True
            return data
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while pos < end:
            if self._remaining:
                take = min(self._remaining, end - pos)
                out.append(bytes(buf[pos : pos + take]))
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._need_crlf = True
                continue
            if self._need_crlf:
                if end - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise HTTPError("malformed chunked body: missing CRLF after a chunk")
                pos += 2
                self._need_crlf = False
                continue
            newline = buf.find(b"\r\n", pos)
            if newline < 0:
                if end - pos > 1024:
                    raise HTTPError("malformed chunked body: overlong chunk-size line")
                break
            size_text = bytes(buf[pos:newline]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HTTPError(f"malformed chunk size {size_text[:32]!r}") from None
            pos = newline + 2
            if size == 0:
                self.done = True  # trailers, if any, are ignored
                break
            self._remaining = size
        del buf[:pos]
        return b"".join(out)


@dataclass
class Response:
    """An HTTP response whose body is read incrementally with `read`."""

    status: int
    headers: dict[str, str]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pending: bytes = b""  # body bytes that arrived together with the headers
    chunked: ChunkedDecoder | None = None
    remaining: int | None = None  # Content-Length countdown, None: until EOF
    finished: bool = False

    async def read(self) -> bytes | None:
        """The next decoded body bytes (possibly empty); None once the body has ended."""
        if self.finished:
            return None
        if self.pending:
            raw, self.pending = self.pending, b""
        else:
            raw = await self.reader.read(READ_SIZE)
            if not raw:
                self.finished = True
                if self.chunked is not None and not self.chunked.done:
                    raise HTTPError("connection closed inside a chunked body")
                return None
        if self.chunked is not None:
            body = self.chunked.feed(raw)
            if self.chunked.done:
                self.finished = True
            return body
        if self.remaining is not None:
            body = raw[: self.remaining]
            self.remaining -= len(body)
            if self.remaining <= 0:
                self.finished = True
            return body
        return raw

    def close(self) -> None:
        """Drop the connection without waiting: a benchmark closes hundreds at once."""
        with contextlib.suppress(Exception):
            self.writer.transport.abort()


async def get(
    host: str,
    port: int,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    timeout: float = 30.0,
) -> Response:
    """Send `GET path` on a new connection and return once the headers arrived."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, limit=READ_SIZE * 4), timeout
    )
    try:
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = b""
        while b"\r\n\r\n" not in head:
            # Only while the head is unfinished: one read may bring the head and much
            # of the body (a replay starts right behind its head).
            if len(head) > 64 * 1024:
                raise HTTPError("response headers larger than 64 KiB")
            data = await asyncio.wait_for(reader.read(READ_SIZE), timeout)
            if not data:
                raise HTTPError(f"connection closed before the response headers of {path}")
            head += data
        head, _, rest = head.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise HTTPError(f"malformed status line {status_line[:80]!r}")
        response_headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            response_headers[name.strip().lower()] = value.strip()
        response = Response(int(parts[1]), response_headers, reader, writer, pending=rest)
        if "chunked" in response_headers.get("transfer-encoding", "").lower():
            response.chunked = ChunkedDecoder()
        elif "content-length" in response_headers:
            response.remaining = int(response_headers["content-length"])
            if response.remaining == 0:
                response.finished = True
        elif response.status in (204, 304):
            response.finished = True
        return response
    except BaseException:
        with contextlib.suppress(Exception):
            writer.transport.abort()
        raise


async def count_events(response: Response, stop_after: int | None = None) -> tuple[int, int, bytes]:
    """Read an SSE body, counting events (one `data:` line each), until it ends or, with
    `stop_after`, once that many have fully arrived (a stream that stays open, like
    nchan's). Returns the events, the body bytes and the body's last 4 KiB.

    Counting `\\ndata: ` with bytes.count keeps the client at C speed; the last six
    bytes of each piece are carried over so a marker split across reads counts once.
    """
    events = size = 0
    carry = tail = b""
    while (body := await response.read()) is not None:
        if not body:
            continue
        data = carry + body
        events += data.count(b"\ndata: ")
        carry = data[-6:]
        size += len(body)
        tail = (tail + body)[-4096:]
        if stop_after is not None and events >= stop_after and tail.endswith(b"\n\n"):
            break
    return events, size, tail
