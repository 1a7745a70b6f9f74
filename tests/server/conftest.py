"""Fixtures for the integration tests (the real-server fixtures live in tests/conftest.py)."""

from __future__ import annotations

import os

import pytest

from tests.conftest import ServerFactory
from tests.support.launcher import ROOT, ServerProcess

ECHO_MODULE = "tests.server.echo_functions"


@pytest.fixture
def echo_server(server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> ServerProcess:
    """A real server that also knows the test-only `echo` and `echo_sync` functions.

    The server subprocess imports them by module name, so the project root goes on
    its PYTHONPATH: the launcher copies this process's environment and sets no cwd.
    """
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) if not path else f"{ROOT}{os.pathsep}{path}")
    return server_factory(ping_interval=1, poll_interval=0.2, functions=ECHO_MODULE)


# `steplog serve` runs one serving process per core unless told otherwise; the tests
# here that are not about `--processes` measure one process (its memory, its metrics,
# a SIGKILL that is a crash), so servers they start run one.
os.environ.setdefault("STEPLOG_PROCESSES", "1")
