"""E2E fixtures: Playwright driving Debian's Chromium (never a downloaded browser), and
nginx in front of real servers. Using either marks a test `needs("chromium")` or
`needs("nginx")` (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from tests.support import needs
from tests.support.nginx import Nginx, start_nginx

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


NginxFactory = Callable[..., Nginx]


@pytest.fixture
def nginx_factory(tmp_path: Path) -> Iterator[NginxFactory]:
    """Start nginx instances in front of given upstream ports; all stopped afterwards."""
    binary = needs.binary("nginx")
    assert binary is not None  # the needs marker checked it before the test started
    started: list[Nginx] = []

    def start(upstreams: list[int], edits: Sequence[tuple[str, str, int]] = ()) -> Nginx:
        proxy = start_nginx(binary, tmp_path / f"nginx{len(started)}", upstreams, edits)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
