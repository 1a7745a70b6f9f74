"""Regenerate the stream view's screenshots in docs/ from the real pages.

`make screenshots` runs this: a real `steplog serve --demo` (a throwaway directory),
Debian's Chromium, and the pages as a user reaches them. Each shot waits on what it
shows (a condition with a deadline), never on a sleep.

    python -m tests.e2e.screenshots [--out docs]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.e2e.conftest import CHROMIUM_ARGS
from tests.support.launcher import ServerProcess, make_server

LONG = 90_000
DOCS = Path(__file__).resolve().parents[2] / "docs"


def start(server: ServerProcess, function: str, **params: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/runs", headers=server.headers, json={"function": function, "params": params}
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def login(page: Page, server: ServerProcess) -> None:
    await page.goto(server.url + "/login")
    await page.fill("#api_key", server.api_key)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#connection[data-state='live']", timeout=LONG)


async def shoot(browser: Browser, server: ServerProcess, out: Path) -> list[Path]:
    made: list[Path] = []
    desktop = await browser.new_context(viewport={"width": 1280, "height": 1000})
    page = await desktop.new_page()
    await login(page, server)

    # A finished scrape of the demo profile, started from the form like a user would.
    await page.click("#start-scrape button")
    await page.wait_for_url("**/runs/*", timeout=LONG)
    await page.wait_for_selector("#status[data-status='succeeded']", timeout=LONG)
    await page.wait_for_selector("#card .name", timeout=LONG)
    made.append(out / "run-view.png")
    await page.screenshot(path=str(made[-1]), full_page=True)

    # A live ticker mid-way: the log streaming, the running step growing.
    run = start(server, "ticker", count=400, interval_ms=60)
    await page.goto(server.url + f"/runs/{run['run_id']}")
    await expect(page.locator("#event-count")).to_have_text(re.compile(r"^\d{3,}$"), timeout=LONG)
    made.append(out / "run-live.png")
    await page.screenshot(path=str(made[-1]), full_page=True)

    # The runs list, with that ticker still running.
    for count in (5, 8):
        start(server, "ticker", count=count, interval_ms=20)
    start(server, "ticker", count=6, interval_ms=20, fail_at=4)
    await page.goto(server.url + "/")
    await page.wait_for_selector("#runs tbody tr[data-status='running']", timeout=LONG)
    made.append(out / "runs-list.png")
    await page.screenshot(path=str(made[-1]), full_page=True)

    # A link that is not valid (what a forged, expired or foreign token shows).
    anonymous = await browser.new_context(viewport={"width": 900, "height": 560})
    other = await anonymous.new_page()
    await other.goto(server.url + f"/runs/{run['run_id']}?token=v1.expired")
    made.append(out / "error-page.png")
    await other.screenshot(path=str(made[-1]))

    # The same live run at 375 px wide.
    phone = await browser.new_context(viewport={"width": 375, "height": 800}, device_scale_factor=2)
    small = await phone.new_page()
    await small.goto(server.url + run["view_url"])
    await expect(small.locator("#event-count")).to_have_text(re.compile(r"^\d{2,}$"), timeout=LONG)
    made.append(out / "run-phone.png")
    await small.screenshot(path=str(made[-1]), full_page=True)
    for context in (desktop, anonymous, phone):
        await context.close()
    return made


async def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as directory:
        server = make_server(Path(directory), demo=1, ping_interval=1).start()
        try:
            async with async_playwright() as playwright:
                path = os.environ.get("STEPLOG_CHROMIUM", "/usr/bin/chromium")
                browser = await playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
                try:
                    for shot in await shoot(browser, server, out):
                        print(shot)
                finally:
                    await browser.close()
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS)
    target: Path = parser.parse_args().out
    target.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(target))
