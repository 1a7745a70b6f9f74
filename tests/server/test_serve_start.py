"""`steplog serve` and `make run` as a new user starts them: a busy port, the start-up lines."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from tests.server.cli import error_lines, steplog, user_env
from tests.support.launcher import ROOT, ServerProcess


def test_a_busy_port_is_one_line_and_a_prompt_exit(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = steplog("serve", "--port", str(port), "--db", str(tmp_path / "steplog.db"),
                       "--demo", env=user_env(tmp_path / "config"), timeout=30)  # fmt: skip
    assert done.returncode == 1
    assert error_lines(done) == [
        f"error: port {port} is in use — pass --port or set STEPLOG_PORT"
        " (with make: make run PORT=8001)"
    ]
    assert "serving on" not in done.stdout + done.stderr  # nothing announced before the bind
    assert "demo site" not in done.stdout + done.stderr  # nor set up
    assert not (tmp_path / "steplog.db").exists()


def test_serve_says_where_to_look_and_where_the_key_is(server: ServerProcess) -> None:
    log = server.log_path.read_text()
    assert f"steplog serving on {server.url} " in log
    key_file = (server.db.parent / "api-key").absolute()
    assert f"open {server.url}/ in a browser; the API key is in {key_file}" in log
    assert server.api_key not in log


def make_dry_run(*args: str, **variables: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "STEPLOG_PORT")}
    command = ["make", "-n", "-C", str(ROOT), "run", *args]
    done = subprocess.run(
        command, env={**env, **variables}, capture_output=True, text=True, check=True
    )
    return done.stdout


def test_make_run_takes_the_port_from_port_or_steplog_port() -> None:
    assert "--port 8000 " in make_dry_run()
    assert "--port 8001 " in make_dry_run("PORT=8001")
    assert "--port 8002 " in make_dry_run(STEPLOG_PORT="8002")
