"""Shared fixtures: real servers on real sockets, and the CI rule for missing components.

Under `CI=true` a test whose real component (nginx, Chromium, PostgreSQL) is
missing fails instead of skipping, so a missing install step shows up red.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import postgres as testing
from tests.support.launcher import ServerProcess, make_server

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(component: str, available: bool, how: str) -> None:
    """Skip (locally) or fail (in CI) when a real component is missing."""
    if available:
        return
    message = f"{component} is not available: {how}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def require_binary(name: str, path: str | None = None) -> str:
    found = path if path and os.access(path, os.X_OK) else shutil.which(name)
    require(name, found is not None, f"install it (apt-get install -y {name})")
    assert found is not None
    return found


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture(autouse=True, scope="session")
def _own_config_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Servers and CLIs the tests start keep their per-user config away from the user's.

    `steplog serve` records itself in `$XDG_CONFIG_HOME/steplog/config.json`; subprocesses
    inherit this variable, so no test run rewrites the real `~/.config/steplog`.
    """
    before = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config-home"))
    yield
    if before is None:
        os.environ.pop("XDG_CONFIG_HOME", None)
    else:
        os.environ["XDG_CONFIG_HOME"] = before


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh schema on the test PostgreSQL server (`STEPLOG_TEST_POSTGRES`), as a URL
    with its search_path; dropped afterwards."""
    server = testing.postgres_url_for_tests()
    problem = await testing.unreachable(server)
    require("PostgreSQL", problem is None, f"{problem} (or set STEPLOG_TEST_POSTGRES)")
    async with testing.scratch_schema(server) as url:
        yield url


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start `steplog serve` subprocesses; every one is stopped at the end of the test."""
    started: list[ServerProcess] = []

    def start(directory: Path | None = None, **settings: Any) -> ServerProcess:
        server = make_server(directory or tmp_path / f"server{len(started)}", **settings)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(server_factory: ServerFactory) -> ServerProcess:
    """One real server with a 1 s ping interval and fast polling."""
    return server_factory(ping_interval=1, poll_interval=0.2)
