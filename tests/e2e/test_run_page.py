"""The run page in real Chromium: the live log, the waterfall, clocks and actions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, Page, expect

from tests.conftest import ServerFactory
from tests.e2e.test_stream_view import LONG, run_record, start
from tests.support.launcher import ServerProcess
from tests.support.wait import wait_for

DONE = {"succeeded", "failed", "cancelled"}
LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longTasks.push(entry.duration);
}).observe({ type: "longtask", buffered: true });
"""


async def seqs(page: Page) -> list[int]:
    rows = await page.eval_on_selector_all("#logs li", "items => items.map(i => +i.dataset.seq)")
    return [int(seq) for seq in rows]


async def finished(server: ServerProcess, run_id: str, deadline_s: float) -> None:
    """Wait until the run has ended (the one wait helper: a condition and a deadline)."""
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers) as client:

        async def ended() -> bool:
            return (await client.get(f"/runs/{run_id}")).json()["status"] in DONE

        await wait_for(ended, deadline_s, interval=0.2, what=f"run {run_id} to end")


async def login(page: Page, server: ServerProcess) -> None:
    await page.goto(server.url + "/login")
    await page.fill("#api_key", server.api_key)
    await page.click("button[type=submit]")
    await page.wait_for_url(server.url + "/", timeout=LONG)


async def test_live_log_grows_follows_pauses_and_filters(
    browser: Browser, server_factory: ServerFactory
) -> None:
    server = server_factory(ping_interval=1)
    run = start(server, "ticker", count=400, interval_ms=40)
    page = await browser.new_page(viewport={"width": 1100, "height": 900})
    await page.goto(server.url + run["view_url"])
    count = page.locator("#event-count")
    await expect(count).to_have_text(re.compile(r"^([6-9]\d|\d{3,})$"), timeout=LONG)
    # Following: the newest line is in view, and only a window of lines is in the DOM.
    shown = await seqs(page)
    assert max(shown) >= 60 and len(shown) < 60
    duration = await page.inner_text("#duration")
    await expect(page.locator("#duration")).not_to_have_text(duration, timeout=LONG)  # it ticks
    # The reader scrolls up: following pauses, a button offers the way back.
    await page.hover("#log-scroll")
    await page.mouse.wheel(0, -100_000)
    await expect(page.locator("#jump-live")).to_be_visible(timeout=LONG)
    await expect(page.locator("#logs li").first).to_have_attribute("data-seq", "1")
    before = await count.inner_text()
    await expect(count).not_to_have_text(before, timeout=LONG)  # events keep coming
    assert min(await seqs(page)) == 1  # still where the reader left it
    await page.click("#jump-live")
    await expect(page.locator("#jump-live")).to_be_hidden()
    last = int(await count.inner_text())
    assert max(await seqs(page)) >= last - 2
    # Filters: by type, by text, by step.
    await page.select_option("#filter-type", "step.started")
    await expect(page.locator("#logs li")).to_have_count(1)
    await expect(page.locator("#logs li")).to_have_attribute("data-type", "step.started")
    await page.select_option("#filter-type", "")
    await page.fill("#filter-text", "tick 7/")
    await expect(page.locator("#logs li")).to_have_count(1)
    await expect(page.locator("#logs li .lmsg")).to_have_text("tick 7/400")
    # Keyboard: the line is a button; Enter opens its envelope.
    await page.focus("#logs li button")
    await page.keyboard.press("Enter")
    await expect(page.locator("#envelope")).to_be_visible()
    envelope = json.loads(await page.inner_text("#envelope-json"))
    assert envelope["message"] == "tick 7/400" and envelope["run_id"] == run["run_id"]
    href = await page.get_attribute("#envelope-replay", "href")
    assert href is not None and f"from={envelope['seq']}" in href and "token=" in href
    await page.fill("#filter-text", "")
    await page.select_option("#filter-step", "tick")
    # Every line but the few outside the step is shown. The run is still live, so read
    # the total first: the shown count read after it can only have grown.
    total = int(await count.inner_text())
    assert int(await page.inner_text("#shown-count")) >= total - 4
    await page.close()


async def test_a_100000_event_run_stays_responsive(
    browser: Browser, server_factory: ServerFactory
) -> None:
    """Replaying, scrolling and filtering 100,000 events: no main-thread task over 200 ms."""
    server = server_factory(ping_interval=1)
    run = start(server, "ticker", count=100_000, interval_ms=0)
    await finished(server, run["run_id"], deadline_s=180)
    total = run_record(server, run["run_id"])["last_seq"]
    assert total >= 100_000
    context = await browser.new_context(viewport={"width": 1100, "height": 900})
    await context.add_init_script(LONG_TASKS)
    page = await context.new_page()
    await page.goto(server.url + run["view_url"])
    await expect(page.locator("#event-count")).to_have_text(str(total), timeout=120_000)
    await expect(page.locator("#connection")).to_have_attribute("data-state", "ended")
    assert await page.locator("#logs li").count() < 100  # a window, not 100,000 rows
    await page.hover("#log-scroll")
    for _ in range(5):
        await page.mouse.wheel(0, -200_000)
    # Filtering goes over every event: on a CPU four times slower (a busy laptop) it
    # still never holds the page, because the pass is done in slices.
    before_filter = len(await page.evaluate("window.__longTasks"))
    cdp = await context.new_cdp_session(page)
    await cdp.send("Emulation.setCPUThrottlingRate", {"rate": 4})
    await page.fill("#filter-text", "tick 5000")
    await expect(page.locator("#shown-count")).to_have_text("11", timeout=LONG)  # 5000, 50000-50009
    await page.fill("#filter-text", "")
    await expect(page.locator("#shown-count")).to_have_text(str(total), timeout=LONG)
    await cdp.send("Emulation.setCPUThrottlingRate", {"rate": 1})
    filtering: list[float] = (await page.evaluate("window.__longTasks"))[before_filter:]
    assert max(filtering, default=0) < 200, sorted(filtering)[-5:]
    await page.click("button[data-speed='0']")  # replay it all again, instantly
    await expect(page.locator("#connection")).to_have_attribute("data-state", "ended", timeout=LONG)
    await expect(page.locator("#event-count")).to_have_text(str(total), timeout=LONG)
    long_tasks: list[float] = await page.evaluate("window.__longTasks")
    assert max(long_tasks, default=0) < 200, sorted(long_tasks)[-5:]
    await context.close()


def worker(server: ServerProcess, log: Path) -> subprocess.Popen[bytes]:
    """A separate `steplog worker` on the server's SQLite file (killable on its own)."""
    return subprocess.Popen(
        [sys.executable, "-m", "stream", "worker", "--db", str(server.db), "--workers", "1"],
        env={**server.env, "STEPLOG_POLL_INTERVAL": "0.1"},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def test_timeline_shows_an_attempt_lane_per_worker_and_the_gap_between(
    browser: Browser, server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(workers=0, poll_interval=0.1, ping_interval=1, lease_seconds=2)
    first = worker(server, tmp_path / "worker1.log")
    second: subprocess.Popen[bytes] | None = None
    try:
        run = start(server, "ticker", count=60, interval_ms=100)
        page = await browser.new_page(viewport={"width": 1100, "height": 900})
        await page.goto(server.url + run["view_url"])
        lane1 = page.locator("#timeline .lane[data-attempt='1']")
        await expect(lane1.locator(".bar[data-status='running']")).to_have_count(1, timeout=LONG)
        await expect(page.locator("#event-count")).to_have_text(
            re.compile(r"^([1-9]\d)$"), timeout=LONG
        )
        first.kill()  # SIGKILL: the worker holds the lease and dies with it
        first.wait(timeout=10)
        second = worker(server, tmp_path / "worker2.log")
        lane2 = page.locator("#timeline .lane[data-attempt='2']")
        await expect(lane2).to_be_visible(timeout=LONG)
        await expect(page.locator("#status")).to_have_attribute(
            "data-status", "succeeded", timeout=LONG
        )
        assert await page.get_attribute("#timeline", "data-lanes") == "2"
        await expect(lane1.locator(".bar")).to_have_attribute("data-status", "lost")
        await expect(lane2.locator(".bar")).to_have_attribute("data-status", "done")
        await expect(lane2.locator(".gap")).to_contain_text("lease expired")
        # An instant replay draws the same waterfall from the log.
        await page.reload()
        await expect(page.locator("#connection")).to_have_attribute("data-state", "ended")
        assert await page.get_attribute("#timeline", "data-lanes") == "2"
        await expect(lane1.locator(".bar")).to_have_attribute("data-status", "lost")
        # A replay at speed moves a cursor along it.
        await page.click("button[data-speed='10']")
        await expect(page.locator("#timeline .cursor").first).to_be_visible(timeout=LONG)
        await page.close()
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=10)


async def test_cancel_and_rerun_from_the_page(
    browser: Browser, server_factory: ServerFactory
) -> None:
    server = server_factory(ping_interval=1)
    run = start(server, "ticker", count=2000, interval_ms=50)
    # A token-only viewer sees no actions.
    page = await browser.new_page()
    await page.goto(server.url + run["view_url"])
    await expect(page.locator("#status")).to_have_attribute("data-status", "running", timeout=LONG)
    assert await page.locator("#actions").is_hidden()
    await page.close()
    # A viewer holding the API key cancels, then re-runs.
    context = await browser.new_context()
    page = await context.new_page()
    await login(page, server)
    await page.goto(f"{server.url}/runs/{run['run_id']}")
    await expect(page.locator("#cancel")).to_be_visible(timeout=LONG)
    await page.click("#cancel")
    await expect(page.locator("#status")).to_have_attribute(
        "data-status", "cancelled", timeout=LONG
    )
    await expect(page.locator("#cancel")).to_be_hidden()
    assert run_record(server, run["run_id"])["status"] == "cancelled"
    await page.focus("#rerun")
    await page.keyboard.press("Enter")  # keyboard only
    await page.wait_for_url(
        re.compile(r"/runs/(?!" + run["run_id"] + r")[0-9a-f]{28}"), timeout=LONG
    )
    new_id = page.url.split("/runs/")[1].split("?")[0]
    record: dict[str, Any] = run_record(server, new_id)
    assert record["function"] == "ticker"
    assert record["params"] == run_record(server, run["run_id"])["params"]
    await expect(page.locator("#status")).to_have_attribute("data-status", "running", timeout=LONG)
    await page.click("#cancel")
    await expect(page.locator("#status")).to_have_attribute(
        "data-status", "cancelled", timeout=LONG
    )
    await context.close()


async def test_rerun_needs_the_api_key(server: ServerProcess) -> None:
    run = start(server, "ticker", count=1, interval_ms=0)
    async with httpx.AsyncClient(base_url=server.url) as client:
        with_token = await client.post(f"/runs/{run['run_id']}/rerun?token={run['token']}")
        assert with_token.status_code == 401
        unknown = await client.post(f"/runs/{'0' * 28}/rerun", headers=server.headers)
        assert unknown.status_code == 404
        made = await client.post(f"/runs/{run['run_id']}/rerun", headers=server.headers)
        assert made.status_code == 202
        record = await client.get(f"/runs/{made.json()['run_id']}", headers=server.headers)
        assert record.json()["trigger"] == "rerun"
        assert record.json()["params"] == {**record.json()["params"], "count": 1}
