"""A real Debian nginx running `infra/nginx.conf`, and clients that time what they receive.

The snippet in `infra/` is used as it is, with only what a deployment changes
templated: the upstream `server` lines (one per steplog instance), the `listen`
port, and the access log path. A test variant (say, `proxy_buffering on`) is an
exact text edit that must match, so a change to the snippet cannot silently
turn a test into one that checks nothing.

nginx runs unprivileged-port, in the foreground, with its own prefix, pid file
and error log (`nginx -p <tmp> -c <tmp>/nginx.conf -g 'daemon off;'`): it never
touches a system nginx that may be running on port 80.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from stream.sse.parser import ParsedEvent, SSEParser
from tests.integration.helpers import ROOT, wait_until
from tests.support.launcher import free_port

SNIPPET = ROOT / "infra" / "nginx.conf"
NGINX = "/usr/sbin/nginx"

UPSTREAM_LINE = re.compile(r"^(\s*)server app:8000([^;]*);\s*$", re.MULTILINE)


def template(snippet: str, upstreams: list[int], port: int, logs: Path) -> str:
    """The snippet with this test's ports and paths (each edit must match once)."""
    snippet, found = UPSTREAM_LINE.subn(
        lambda m: "\n".join(f"{m[1]}server 127.0.0.1:{p}{m[2]};" for p in upstreams), snippet
    )
    assert found == 1, "infra/nginx.conf no longer has its `server app:8000 …;` line"
    snippet = edit(snippet, "listen 80;", f"listen 127.0.0.1:{port};")
    snippet = edit(
        snippet,
        "access_log /var/log/nginx/steplog.access.log steplog;",
        f"access_log {logs / 'access.log'} steplog;",
    )
    return snippet


def edit(text: str, old: str, new: str, count: int = 1) -> str:
    """Replace `old` with `new`, failing unless `old` occurs exactly `count` times."""
    occurs = text.count(old)
    assert occurs == count, f"expected {count} x {old!r} in infra/nginx.conf, found {occurs}"
    return text.replace(old, new)


MAIN_CONFIG = """\
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log info;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    access_log {prefix}/logs/default.access.log;
    include {prefix}/steplog.conf;
}}
"""


@dataclass
class Nginx:
    """One running nginx; `url` is its address."""

    prefix: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access_log(self) -> str:
        path = self.prefix / "logs" / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log_once_it_has(self, *needles: str, timeout: float = 5.0) -> str:
        """The access log, once it holds every one of `needles` (or at the deadline).

        nginx writes a request's line when it finalizes the request, which can be
        just after the client has read the last byte of the response.
        """
        deadline = time.monotonic() + timeout
        while True:
            log = self.access_log()
            if all(needle in log for needle in needles) or time.monotonic() >= deadline:
                return log
            time.sleep(0.05)  # polling a condition against a deadline

    def error_log(self) -> str:
        path = self.prefix / "logs" / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_nginx(
    binary: str, prefix: Path, upstreams: list[int], edits: Sequence[tuple[str, str, int]] = ()
) -> Nginx:
    """Start nginx on a free port in front of `upstreams`, with `edits` (old, new, count)."""
    for folder in ("logs", "tmp"):
        (prefix / folder).mkdir(parents=True, exist_ok=True)
    port = free_port()
    snippet = template(SNIPPET.read_text(), upstreams, port, prefix / "logs")
    for old, new, count in edits:
        snippet = edit(snippet, old, new, count)
    (prefix / "steplog.conf").write_text(snippet)
    # As root the master would hand the workers to `nobody`, who may not write here.
    user = "user root;" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(MAIN_CONFIG.format(prefix=prefix, user=user))
    command = [binary, "-e", str(prefix / "logs" / "error.log"), "-p", str(prefix)]
    command += ["-c", str(prefix / "nginx.conf")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, f"nginx rejected the config:\n{checked.stderr}"
    process = subprocess.Popen(
        [*command, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    nginx = Nginx(prefix, port, process)

    def listening() -> bool:
        assert process.poll() is None, f"nginx exited:\n{nginx.error_log()}"
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, 10, what="nginx to listen")
    return nginx


# --- clients --------------------------------------------------------------------------------


@dataclass
class Received:
    """An event and the wall-clock time (epoch seconds) the client had parsed it."""

    event: ParsedEvent
    at: float

    @property
    def envelope(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.event.data)
        return found


@dataclass
class Connection:
    """What one HTTP response of a stream delivered."""

    status: int
    events: list[Received] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    ended_by_server: bool = False


TERMINAL = {"completed", "failed", "cancelled"}


class Follower:
    """A resuming SSE client on a thread, like EventSource: reconnects with Last-Event-ID.

    It honours the server's `retry:` hint, stops on the terminal event or a 204, and
    keeps every connection's events and comments (with receipt times) for the test.
    """

    def __init__(
        self, url: str, *, deadline: float = 60.0, headers: dict[str, str] | None = None
    ) -> None:
        self.url = url
        self.headers = headers or {}
        self.deadline = time.monotonic() + deadline
        self.connections: list[Connection] = []
        self.errors: list[str] = []
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Follower:
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the client did not finish: {self.summary()}"

    @property
    def received(self) -> list[Received]:
        return [item for conn in self.connections for item in conn.events]

    def summary(self) -> str:
        return "; ".join(
            f"#{i} {c.status}: {len(c.events)} events, comments {c.comments[-2:]}"
            for i, c in enumerate(self.connections)
        ) + (f"; errors {self.errors[-3:]}" if self.errors else "")

    def _run(self) -> None:
        last_id, retry = "", 0.2
        try:
            while time.monotonic() < self.deadline:
                headers = {**self.headers, "Last-Event-ID": last_id} if last_id else self.headers
                try:
                    conn, retry = self._connect(headers, retry)
                except httpx.TransportError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    time.sleep(retry)  # back-off between reconnects, like EventSource
                    continue
                if conn.status == 204:
                    return
                if conn.events:
                    last_id = conn.events[-1].event.id
                    if conn.events[-1].event.event in TERMINAL:
                        return
                if conn.status != 200:
                    self.errors.append(f"status {conn.status}")
                time.sleep(retry)  # EventSource waits `retry` before reconnecting
        finally:
            self.done.set()

    def _connect(self, headers: dict[str, str], retry: float) -> tuple[Connection, float]:
        timeout = httpx.Timeout(5.0, read=30.0)
        with (
            httpx.Client(timeout=timeout, verify=False) as http,
            http.stream("GET", self.url, headers=headers) as response,
        ):
            conn = Connection(response.status_code)
            self.connections.append(conn)
            if response.status_code != 200:
                response.read()
                return conn, retry
            parser = SSEParser()
            for chunk in response.iter_bytes():  # decoded, should a proxy compress
                for event in parser.feed(chunk):
                    conn.events.append(Received(event, time.time()))
                conn.comments = list(parser.comments)
                if conn.events and conn.events[-1].event.event in TERMINAL:
                    break
            else:
                conn.ended_by_server = True
            if parser.retry is not None:
                retry = parser.retry / 1000
            return conn, retry


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of `GET {url}/metrics` (0 when the series does not exist)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def open_sockets(pid: int) -> int:
    """How many sockets the process holds open (its file descriptors that are sockets)."""
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # closed while we looked
            count += os.readlink(fd).startswith("socket:")
    return count


def raw_request(port: int, head: bytes, *, rcvbuf: int | None = None) -> socket.socket:
    """A plain socket that sent `head` (for clients httpx cannot imitate)."""
    sock = socket.socket()
    if rcvbuf is not None:  # before connect, so the kernel does not grow it later
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.sendall(head)
    return sock


def read_response_head(sock: socket.socket, timeout: float = 10.0) -> tuple[int, bytes]:
    """Status and everything read until the end of the headers (plus what came with them)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data


def read_until_closed(sock: socket.socket, timeout: float = 15.0) -> tuple[bytes, str]:
    """Everything the socket still delivers, and how it ended: `eof` or `reset`."""
    sock.settimeout(timeout)
    data = bytearray()
    try:
        while chunk := sock.recv(1 << 20):
            data += chunk
    except ConnectionResetError:
        return bytes(data), "reset"
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open for {timeout}s") from None
    return bytes(data), "eof"
