"""E2E fixtures: Playwright driving Debian's Chromium (never a downloaded browser), and
nginx in front of real servers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from tests.conftest import require_binary
from tests.e2e.nginx import NGINX, Nginx, start_nginx

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    path = require_binary("chromium", os.environ.get("STEPLOG_CHROMIUM", "/usr/bin/chromium"))
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


NginxFactory = Callable[..., Nginx]


@pytest.fixture
def nginx_factory(tmp_path: Path) -> Iterator[NginxFactory]:
    """Start nginx instances in front of given upstream ports; all stopped afterwards."""
    binary = require_binary("nginx", NGINX)
    started: list[Nginx] = []

    def start(upstreams: list[int], edits: Sequence[tuple[str, str, int]] = ()) -> Nginx:
        proxy = start_nginx(binary, tmp_path / f"nginx{len(started)}", upstreams, edits)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
