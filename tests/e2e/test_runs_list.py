"""The runs list in real Chromium: pages over many runs, counts, chart, row actions."""

from __future__ import annotations

import re
import time
from pathlib import Path

from playwright.async_api import Browser, expect

from tests.conftest import ServerFactory
from tests.e2e.test_run_page import finished, login
from tests.e2e.test_stream_view import LONG, run_record, start


async def test_runs_list_pages_counts_and_opens_rows(
    browser: Browser, server_factory: ServerFactory
) -> None:
    server = server_factory(ping_interval=1)
    made = [start(server, "ticker", count=1, interval_ms=0)["run_id"] for _ in range(120)]
    for run_id in made:  # every run has ended: the counts and the chart are settled
        await finished(server, run_id, deadline_s=60)
    page = await browser.new_page(viewport={"width": 1200, "height": 900})
    await login(page, server)
    await expect(page.locator("#counts li[data-status='succeeded'] strong")).to_have_text(
        re.compile(r"^1[12]\d$"), timeout=LONG
    )
    rows = page.locator("#runs tbody tr")
    await expect(rows).to_have_count(50, timeout=LONG)
    await page.click("#more")
    await expect(rows).to_have_count(100, timeout=LONG)
    await page.click("#more")
    await expect(rows).to_have_count(120, timeout=LONG)
    await expect(page.locator("#more")).to_be_hidden()
    ids = await page.eval_on_selector_all("#runs tbody tr", "rows => rows.map(r => r.dataset.run)")
    assert ids == sorted(made, reverse=True)  # newest first, each once
    await expect(page.locator("#chart svg rect")).to_have_count(40, timeout=LONG)
    first = page.locator(f"#runs tr[data-run='{made[-1]}']")
    await expect(first.locator(".trigger")).to_have_text("api")
    await expect(first.locator(".run-id")).to_have_text(made[-1][-8:])
    await first.locator(".target").click()  # the whole row opens the run
    await page.wait_for_url(f"**/runs/{made[-1]}", timeout=LONG)
    await expect(page.locator("#status")).to_have_attribute("data-status", "succeeded")
    await page.close()


async def test_cancel_and_rerun_from_the_list(
    browser: Browser, server_factory: ServerFactory
) -> None:
    server = server_factory(ping_interval=1)
    page = await browser.new_page(viewport={"width": 375, "height": 800})  # a phone
    await login(page, server)
    run = start(server, "ticker", count=2000, interval_ms=50)
    row = page.locator(f"#runs tr[data-run='{run['run_id']}']")
    await expect(row).to_have_attribute("data-status", "running", timeout=LONG)
    duration = row.locator("[data-duration]")
    await expect(duration).not_to_have_text("", timeout=LONG)
    shown = await duration.inner_text()
    await expect(duration).not_to_have_text(shown, timeout=LONG)  # it ticks
    await row.locator("button[data-action='cancel']").click()
    await expect(row).to_have_attribute("data-status", "cancelled", timeout=LONG)
    assert run_record(server, run["run_id"])["status"] == "cancelled"
    await expect(page.locator("#counts li[data-status='cancelled'] strong")).to_have_text(
        "1", timeout=LONG
    )
    await row.locator("button[data-action='rerun']").click()
    await page.wait_for_url(re.compile(r"/runs/[0-9a-f]{28}\?token="), timeout=LONG)
    assert run["run_id"] not in page.url
    await expect(page.locator("#status")).to_have_attribute("data-status", "running", timeout=LONG)
    await page.click("#cancel")
    await expect(page.locator("#status")).to_have_attribute(
        "data-status", "cancelled", timeout=LONG
    )
    await page.close()


async def test_a_running_rows_actions_fit_the_table_at_1280_px(
    browser: Browser, server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(ping_interval=1)
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    # Three days on: every start is a date and time, every running duration is long.
    await page.clock.set_fixed_time(time.time() + 3 * 86400 + 3600)
    await login(page, server)
    start(server, "scrape", url="https://www.example.com/in/a-rather-long-profile-name-here")
    run = start(server, "ticker", count=2000, interval_ms=50)
    row = page.locator(f"#runs tr[data-run='{run['run_id']}']")
    await expect(row).to_have_attribute("data-status", "running", timeout=LONG)
    await expect(row.locator("button[data-action='cancel']")).to_be_visible()
    await page.screenshot(path=str(tmp_path / "runs-1280.png"))
    # Measured in one go: the list redraws its rows as progress arrives.
    measured = await page.eval_on_selector(
        ".table-wrap",
        """wrap => ({
            right: wrap.getBoundingClientRect().right,
            scroll: wrap.scrollWidth,
            client: wrap.clientWidth,
            buttons: [...wrap.querySelectorAll("tr[data-status='running'] button")].map(
                b => [b.dataset.action, b.getBoundingClientRect().right]),
        })""",
    )
    assert {action for action, _ in measured["buttons"]} == {"cancel", "rerun"}
    for action, right in measured["buttons"]:
        assert right <= measured["right"], f"{action} is clipped: {measured}"
    assert measured["scroll"] <= measured["client"], f"the table overflows its box: {measured}"
    await row.locator("button[data-action='cancel']").click()
    await expect(row).to_have_attribute("data-status", "cancelled", timeout=LONG)
    await page.close()
