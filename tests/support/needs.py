"""The real components a test may need beyond Python, and whether this machine has them.

The `needs` marker names them (`@pytest.mark.needs("postgres")`); tests/conftest.py
adds it from the fixtures that hand a component out (`FIXTURES`) and, before each
marked test, skips it with the reason here, or fails it under `CI=true` so a
missing install step shows up red instead of as a quiet skip.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

from tests.support import postgres

COMPONENTS = ("postgres", "chromium", "nginx", "jq")

FIXTURES = {"pg_url": "postgres", "chromium": "chromium", "nginx_factory": "nginx"}
"""Fixture name → the component a test using it (directly or through another fixture) needs."""

BINARIES = {
    "chromium": os.environ.get("STEPLOG_CHROMIUM", "/usr/bin/chromium"),
    "nginx": "/usr/sbin/nginx",
    "jq": "/usr/bin/jq",  # the README's examples use it
}
"""Debian's paths (never a downloaded browser); `STEPLOG_CHROMIUM` points at another."""


def binary(component: str) -> str | None:
    """The executable for `component`: its usual path, else one on PATH."""
    path = BINARIES[component]
    return path if os.access(path, os.X_OK) else shutil.which(component)


@functools.cache
def missing(component: str) -> str | None:
    """Why `component` cannot be used here, or None when it can (asked once per session)."""
    if component == "postgres":
        server = postgres.postgres_url_for_tests()
        # On a thread of its own: the check's event loop must not touch the one
        # pytest-asyncio manages for the tests.
        with ThreadPoolExecutor(1) as pool:
            problem = pool.submit(asyncio.run, postgres.unreachable(server)).result()
        return None if problem is None else f"{problem} (or set STEPLOG_TEST_POSTGRES)"
    if component in BINARIES:
        if binary(component) is None:
            return f"{BINARIES[component]} not found: install it (apt-get install -y {component})"
        return None
    raise ValueError(f"unknown component {component!r}: the needs marker knows {COMPONENTS}")
