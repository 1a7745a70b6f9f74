"""A real Debian nginx running `infra/nginx.conf` (the clients are in `tests.support.sse`).

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

import os
import re
import signal
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tests.support.launcher import ROOT, free_port
from tests.support.wait import wait_until

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


class NginxFailed(Exception):
    """nginx refused its config or exited before it listened."""


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
        """The access log, once it holds every one of `needles` (a failure at the deadline).

        nginx writes a request's line when it finalizes the request, which can be
        just after the client has read the last byte of the response.
        """

        def logged() -> str | None:
            log = self.access_log()
            return log if all(needle in log for needle in needles) else None

        return wait_until(logged, timeout, what=f"nginx's access log to name {needles}")

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


N = TypeVar("N", bound=Nginx)


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
    (prefix / "nginx.conf").write_text(MAIN_CONFIG.format(prefix=prefix, user=run_as()))
    return launch(Nginx, binary, prefix, port)


def run_as() -> str:
    """The `user` line: as root the master would hand its workers to `nobody`, who may
    not write in the test's directories."""
    return "user root;" if os.geteuid() == 0 else ""


def launch(kind: type[N], binary: str, prefix: Path, port: int) -> N:
    """Check `prefix/nginx.conf`, start nginx on it in the foreground, wait for `port`.

    A rejected config or an nginx that exits is `NginxFailed`, with nginx's own words.
    """
    command = [binary, "-e", str(prefix / "logs" / "error.log"), "-p", str(prefix)]
    command += ["-c", str(prefix / "nginx.conf")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
    if checked.returncode != 0:
        raise NginxFailed(f"nginx rejected the config:\n{checked.stderr}")
    process = subprocess.Popen(
        [*command, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    nginx = kind(prefix, port, process)

    def listening() -> bool:
        if process.poll() is not None:
            raise NginxFailed(f"nginx exited:\n{nginx.error_log()}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_until(listening, 10, what="nginx to listen")
    except BaseException:
        nginx.stop()
        raise
    return nginx
