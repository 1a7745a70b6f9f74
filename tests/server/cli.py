"""Run the installed `steplog` command as a user would: its own process, its own environment.

Every call checks that nothing the user sees is a traceback: a user's mistake or
an unreachable server is one line naming the problem.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

STEPLOG = Path(sys.executable).parent / "steplog"
"""The console script `make install` puts in the virtualenv (what the README runs)."""

CLIENT_VARIABLES = ("STEPLOG_API_KEY", "STEPLOG_URL", "STEPLOG_DB", "STEPLOG_PORT")


def user_env(config_home: Path, **variables: str) -> dict[str, str]:
    """This process's environment without the CLI's settings, with a config home of its own."""
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARIABLES}
    env["XDG_CONFIG_HOME"] = str(config_home)
    env.update(variables)
    return env


def steplog(
    *args: str,
    env: dict[str, str],
    cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """`steplog ARGS…`; fails the test if anything printed is a traceback."""
    done = subprocess.run(
        [str(STEPLOG), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.strip()]
