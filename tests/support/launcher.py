"""Start a real `steplog serve` in a subprocess and wait until it answers.

Used by the benchmark and the server tests: both talk to a real Hypercorn
server over a real socket, never to an in-process test client.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from storage.backends import log_file
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
"""The project root: a server subprocess given a test module (`STEPLOG_FUNCTIONS=tests.…`)
must be able to import it."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """A running `steplog serve`; `url`, `api_key` and the subprocess.

    `db` is the SQLite path serve uses (the API key is read from the `api-key` file
    serve keeps beside it) unless `db_url` names another log, e.g. `postgresql://…`:
    nothing is written beside a URL, so the key then comes from `STEPLOG_API_KEY`
    in `env`, which `make_server` sets. `db` stays a Path so SQLite callers keep
    opening it directly.
    """

    db: Path
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    api_key: str = field(default="")
    db_url: str | None = None

    @property
    def database(self) -> str:
        """What serve is given as `--db`."""
        return self.db_url if self.db_url is not None else str(self.db)

    @property
    def url(self) -> str:
        scheme = "https" if self.env.get("STEPLOG_CERTFILE") else "http"  # TLS: self-signed
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ServerProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stream",
                "serve",
                "--port",
                str(self.port),
                "--db",
                self.database,
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        process = self.process

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"steplog serve exited early; see {self.log_path}")
            with contextlib.suppress(httpx.TransportError):
                answer = httpx.get(f"{self.url}/healthz", timeout=1, verify=False)
                return answer.status_code == 200
            return False

        wait_until(answers, timeout, what=f"steplog serve on port {self.port} to answer /healthz")
        self.api_key = (
            self.env["STEPLOG_API_KEY"]
            if is_postgres_url(self.database)
            else (self.db.parent / "api-key").read_text().strip()
        )
        return self

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def stop_processes(processes: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    """SIGTERM every process, then wait for each (SIGKILL after `timeout`)."""
    for proc in processes:
        proc.terminate()
    for proc in processes:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def is_postgres_url(db: str) -> bool:
    """Whether `db` names a log in a shared database server (PostgreSQL), not a file."""
    return log_file(db) is None


def make_server(
    directory: Path,
    *,
    port: int | None = None,
    db: str | None = None,
    log_path: Path | None = None,
    **settings: str | int | float,
) -> ServerProcess:
    """A server on `db`, else `directory/steplog.db`; `settings` become `STEPLOG_*` variables.

    Its output goes to `log_path`, else `directory/server.log` (a test whose directory
    is a volume it fills up keeps the log elsewhere).

    `directory` still holds the server's log. On a `postgresql://` URL, serve refuses
    to invent credentials (there is no directory of its own to keep them in), so an
    API key and webhook secret are generated here unless the environment has them.

    One serving process unless `processes=` says otherwise (serve's default is one
    per core): most tests look at one process (its pid's memory and connections, a
    SIGKILL that is a crash, its metrics), and the ones about `--processes` ask.
    """
    env = dict(os.environ)
    env.setdefault("STEPLOG_PROCESSES", "1")
    env.update({f"STEPLOG_{k.upper()}": str(v) for k, v in settings.items()})
    env.setdefault("PYTHONUNBUFFERED", "1")
    if db is not None and is_postgres_url(db):
        env.setdefault("STEPLOG_API_KEY", f"slk_{secrets.token_hex(16)}")
        secret = base64.b64encode(secrets.token_bytes(32)).decode()
        env.setdefault("STEPLOG_WEBHOOK_SECRET", f"whsec_{secret}")
    directory.mkdir(parents=True, exist_ok=True)
    return ServerProcess(
        db=directory / "steplog.db",
        db_url=db,
        port=port or free_port(),
        env=env,
        log_path=log_path or directory / "server.log",
    )
