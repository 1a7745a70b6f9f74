"""nchan, the peer steplog is measured against in `make bench`: its server and publisher.

nchan (Debian's `libnginx-mod-nchan`) is nginx's pub/sub module: a C server that
buffers messages in shared memory and fans them out to EventSource subscribers.
It does not write anything durably, so it is a lower bound on what a live stream
costs, not a like-for-like competitor; the table shows steplog's figures beside it.

The server is Debian's nginx with one worker (like steplog's one event loop), run
in the foreground in a temporary prefix with its own config (`nchan.conf` beside
this module, filled in here) on a free loopback port, and stopped afterwards; it
never touches a system nginx. Without the module or nginx, `missing()` says so and
the benchmark shows that in its rows instead of failing.

Messages mirror steplog's event envelope (same keys, similar size, an `event:`
name per frame), so both servers send about the same bytes per event and the
one subscriber code of `tests.bench.subscribers` reads both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import string
from collections.abc import Iterator
from pathlib import Path

from storage.timefmt import iso
from tests.bench.common import HOST, BenchError, _cpu_seconds
from tests.support.launcher import free_port
from tests.support.nginx import Nginx, NginxFailed, launch, run_as

NGINX = Path("/usr/sbin/nginx")
MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
TEMPLATE = Path(__file__).with_name("nchan.conf")
SUBSCRIBE_HEADERS = {"Accept": "text/event-stream"}
"""nchan answers 403 to a GET on an EventSource location without this header."""


class _Config(string.Template):
    delimiter = "@"  # nginx's own variables use `$`


def missing() -> str | None:
    """Why nchan cannot run here (for the table's rows), or None when it can."""
    if not NGINX.exists():
        return f"nchan not installed (no {NGINX})"
    if not MODULE.exists():
        return "nchan not installed (Debian's libnginx-mod-nchan)"
    return None


HINT = "`make system-deps` as root installs Debian's nginx and libnginx-mod-nchan"


class NchanServer(Nginx):
    """One running nchan; publish at `/pub/<channel>`, subscribe at `/sub/<channel>`.

    An nginx like the e2e tests' (its `stop` is nginx's fast shutdown: open streams are
    dropped, not drained), on this module's own config.
    """

    def cpu_seconds(self) -> float:
        """CPU seconds the master and its worker have used (the master idles): beside
        the client's, it says which side of a measurement was busy."""
        return _cpu_seconds(self.process.pid)


@contextlib.contextmanager
def running(prefix: Path, buffer: int = 100_000) -> Iterator[NchanServer]:
    """nchan in `prefix` keeping up to `buffer` messages per channel, stopped afterwards."""
    reason = missing()
    if reason is not None:
        raise BenchError(reason)
    for folder in ("logs", "tmp"):
        (prefix / folder).mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = _Config(TEMPLATE.read_text()).substitute(
        prefix=prefix, port=port, user=run_as(), buffer=buffer
    )
    (prefix / "nginx.conf").write_text(config)
    try:
        server = launch(NchanServer, str(NGINX), prefix, port)
    except NginxFailed as failed:
        raise BenchError(f"nchan: {str(failed)[-300:]}") from None
    try:
        yield server
    finally:
        server.stop()


def envelope(channel: str, seq: int, count: int, at: float) -> bytes:
    """A message shaped like steplog's `step.progress` envelope (its `at` the publish time)."""
    return json.dumps(
        {
            "run_id": channel,
            "seq": seq,
            "type": "step.progress",
            "step": "tick",
            "message": f"tick {seq}/{count}",
            "pct": 100 * seq / count,
            "data": {"tick": seq},
            "attempt": 1,
            "at": iso(at),
        },
        separators=(",", ":"),
    ).encode()


class Publisher:
    """POSTs messages to one channel over one keep-alive connection (raw socket).

    `publish` pipelines a batch: all requests are written, then all answers read, so
    filling a 100,000-message channel is not a round trip per message.
    """

    def __init__(self, port: int, channel: str) -> None:
        self.port = port
        self.channel = channel
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Publisher:
        self._reader, self._writer = await asyncio.open_connection(HOST, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.transport.abort()

    async def publish(self, messages: list[tuple[str, bytes]]) -> None:
        """Publish (event name, body) pairs in order; each must be accepted."""
        assert self._reader is not None and self._writer is not None, "use `async with`"
        head = f"POST /pub/{self.channel} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
        self._writer.write(
            b"".join(
                (
                    f"{head}X-EventSource-Event: {event}\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode()
                + body
                for event, body in messages
            )
        )
        for _ in messages:
            raw = await asyncio.wait_for(self._reader.readuntil(b"\r\n\r\n"), 30)
            status_line, *lines = raw.decode("latin-1").split("\r\n")
            length = 0
            for line in lines:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = await self._reader.readexactly(length)
            status = status_line.split(" ", 2)[1]
            if status not in ("201", "202"):
                raise BenchError(f"nchan refused a message: {status_line} {body[:200]!r}")
