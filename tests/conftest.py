"""Shared fixtures: real servers on real sockets, and the `needs` marker's rule.

A test that needs a real component beyond Python (PostgreSQL, Chromium, nginx) is
marked `needs(...)`: by hand where it reaches the component itself (the PostgreSQL
half of a backend-parametrised suite), and here, at collection, for every test
that uses a fixture handing one out (`tests.support.needs.FIXTURES`). A marked
test is skipped with the reason when the component is missing, and fails instead
under `CI=true`, so a missing install step shows up red. `pytest -m "not needs"`
runs everything this machine can run without any of them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import needs
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a component's fixture as needing it; refuse unknown names."""
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            if fixture in needs.FIXTURES:
                item.add_marker(pytest.mark.needs(needs.FIXTURES[fixture]))
        for marker in item.iter_markers("needs"):
            unknown = set(marker.args) - set(needs.COMPONENTS)
            if unknown or not marker.args:
                raise pytest.UsageError(
                    f"{item.nodeid}: needs{marker.args} — name one of {needs.COMPONENTS}"
                )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture starts: skip (or, in CI, fail) when a needed component is missing."""
    for component in sorted({c for m in item.iter_markers("needs") for c in m.args}):
        problem = needs.missing(component)
        require(component, problem is None, problem or "")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium (`STEPLOG_CHROMIUM` to use another); never a downloaded browser."""
    path = needs.binary("chromium")
    assert path is not None  # the needs marker checked it before the test started
    return path


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
    with its search_path; dropped afterwards. Using it marks the test `needs("postgres")`."""
    async with testing.scratch_schema(testing.postgres_url_for_tests()) as url:
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
