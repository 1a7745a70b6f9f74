"""The archiver's run in real Chromium: not in the list, and a page that says it is done."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, expect

from tests.conftest import ServerFactory
from tests.e2e.test_run_page import finished, login
from tests.e2e.test_stream_view import LONG, start
from tests.server.test_internal_runs import archive_now, listed


async def test_the_list_starts_empty_then_hides_the_archivers_run(
    browser: Browser, server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(ping_interval=1)
    page = await browser.new_page(viewport={"width": 1200, "height": 900})
    await login(page, server)
    await expect(page.locator("#runs tbody")).to_contain_text("No runs yet.", timeout=LONG)

    run = start(server, "ticker", count=1, interval_ms=0)
    await finished(server, run["run_id"], deadline_s=60)
    archive_now(server, tmp_path)
    [own] = listed(server, function="steplog.archive")["runs"]
    await page.reload()
    rows = page.locator("#runs tbody tr[data-run]")
    await expect(rows).to_have_count(1, timeout=LONG)
    await expect(rows).to_have_attribute("data-run", run["run_id"])

    await page.goto(f"{server.url}/runs/{own['id']}")
    await expect(page.locator("#status")).to_have_attribute("data-status", "succeeded",
                                                            timeout=LONG)  # fmt: skip
    await expect(page.locator("#pct")).to_have_text("100%")
    await expect(page.locator("#timeline")).to_have_text("No worker ran it.")
    await expect(page.locator("#logs")).to_contain_text("moved to segment-")  # archive.segment
    await expect(page.locator("#rerun")).to_be_hidden()
    await expect(page.locator("#cancel")).to_be_hidden()
    await page.close()
