"""The stream view in real Chromium against a real server; and `steplog tail`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, Page, expect

from stream.http.tokens import mint
from tests.conftest import ServerFactory
from tests.support.api import token_key
from tests.support.launcher import ServerProcess

LONG = 30_000  # ms: generous deadlines for a loaded 2-core machine


def start(server: ServerProcess, function: str, **params: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/runs", headers=server.headers, json={"function": function, "params": params}
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def run_record(server: ServerProcess, run_id: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{server.url}/runs/{run_id}", headers=server.headers).json()
    return body


async def timeline(page: Page) -> list[str]:
    rows = await page.eval_on_selector_all(
        "#steps li", "items => items.map(i => i.dataset.step + ':' + i.dataset.status)"
    )
    return list(rows)


async def test_page_keeps_going_through_a_server_kill(
    browser: Browser, server_factory: ServerFactory, tmp_path: Path
) -> None:
    directory = tmp_path / "srv"
    settings: dict[str, Any] = {"lease_seconds": 2, "ping_interval": 1, "retry_ms": 300}
    server = server_factory(directory=directory, **settings)
    run = start(server, "ticker", count=40, interval_ms=100)
    page = await browser.new_page()
    await page.goto(server.url + run["view_url"])
    # Locator waits, not wait_for_function: the page's CSP rightly forbids eval.
    await expect(page.locator("#event-count")).to_have_text(
        re.compile(r"^([6-9]|\d{2,})$"), timeout=LONG
    )
    server.kill()
    await page.wait_for_selector("#connection[data-state='reconnecting']", timeout=LONG)
    assert "last event id" in await page.inner_text("#connection")
    server_factory(directory=directory, port=server.port, **settings)
    await page.wait_for_selector("#connection[data-state='ended']", timeout=LONG)
    await page.wait_for_selector("#status[data-status='succeeded']", timeout=LONG)
    record = run_record(server, run["run_id"])
    assert record["attempt"] == 2
    steps = await timeline(page)
    assert steps == ["tick:done"]  # each step exactly once, even though attempt 2 redid it
    assert int(await page.inner_text("#event-count")) == record["last_seq"]
    await page.close()


async def test_instant_replay_draws_the_live_timeline(
    browser: Browser, server_factory: ServerFactory
) -> None:
    server = server_factory(ping_interval=1)
    run = start(server, "ticker", count=12, interval_ms=60, fail_at=9)
    page = await browser.new_page()
    await page.goto(server.url + run["view_url"])
    await page.wait_for_selector("#connection[data-state='ended']", timeout=LONG)
    live_steps = await timeline(page)
    live_count = await page.inner_text("#event-count")
    live_status = await page.inner_text("#status")
    assert live_steps == ["tick:failed"] and live_status == "failed"

    await page.reload()  # the run has ended: the page replays it
    await page.wait_for_selector("#connection[data-state='ended']", timeout=LONG)
    await page.click("button[data-speed='0']")
    await page.wait_for_selector("#connection[data-state='ended']", timeout=LONG)
    assert await timeline(page) == live_steps
    assert await page.inner_text("#event-count") == live_count
    assert await page.inner_text("#status") == live_status
    await page.close()


async def test_replay_from_an_event_link(browser: Browser, server_factory: ServerFactory) -> None:
    server = server_factory(ping_interval=1)
    run = start(server, "ticker", count=5, interval_ms=20)
    page = await browser.new_page()
    await page.goto(server.url + run["view_url"])
    await page.wait_for_selector("#status[data-status='succeeded']", timeout=LONG)
    link = await page.get_attribute("#steps li[data-step='tick'] a", "href")
    assert link is not None and "from=" in link
    await page.goto(link)
    await page.wait_for_selector("#connection[data-state='ended']", timeout=LONG)
    assert await timeline(page) == ["tick:done"]
    await page.close()


async def test_an_expired_link_says_so_instead_of_waiting(
    browser: Browser, server_factory: ServerFactory
) -> None:
    """A link whose token has expired (minted with a past expiry and the server's own
    key) is a page that says so, and the page stops: no retry, no spinner."""
    server = server_factory(ping_interval=1)
    run = start(server, "ticker", count=3, interval_ms=20)
    expired = mint(token_key(server), run["run_id"], int(time.time()) - 60).value
    page = await browser.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    await page.goto(f"{server.url}/runs/{run['run_id']}?token={expired}")
    await expect(page.locator("h1")).to_have_text("This link is not valid or has expired")
    assert not any("/events" in url for url in requests)  # it never opened a stream
    await page.close()


async def test_a_link_that_expires_while_watching_says_so(
    browser: Browser, server_factory: ServerFactory
) -> None:
    """The stream ends when its token does; the page learns why from the server's 401
    (`reason: token_expired`) and says so, instead of retrying forever."""
    server = server_factory(ping_interval=1, token_ttl=5)
    run = start(server, "ticker", count=600, interval_ms=100)  # a minute of ticks
    page = await browser.new_page()
    await page.goto(server.url + run["view_url"])
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=LONG)
    assert await page.locator("#expired").is_hidden()
    await expect(page.locator("#expired")).to_be_visible(timeout=LONG)
    await expect(page.locator("#connection")).to_have_attribute("data-state", "expired")
    assert int(await page.inner_text("#event-count")) > 0  # what it had shown stays
    await page.close()


async def test_hostile_bio_is_shown_as_text_and_runs_nothing(
    browser: Browser, server_factory: ServerFactory
) -> None:
    server = server_factory(functions="tests.e2e.view_functions")
    bio = '<script>window.pwned = 1</script><img src="x" onerror="window.pwned = 2">'
    run = start(server, "profile_echo", profile={"name": "Mallory <b>", "about": bio})
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(server.url + run["view_url"])
    await page.wait_for_selector("#card .about", timeout=LONG)
    assert await page.inner_text("#card .about") == bio
    assert await page.inner_text("#card .name") == "Mallory <b>"
    assert await page.evaluate("window.pwned") is None
    assert await page.query_selector("#card img, #card script, #card b") is None
    assert await page.query_selector("#logs li") is not None
    assert errors == []
    csp = await page.request.get(server.url + run["view_url"], headers={"Accept": "text/html"})
    assert "script-src 'self'" in csp.headers["content-security-policy"]
    await page.close()


async def test_runs_list_needs_login_and_updates_live(
    browser: Browser, server_factory: ServerFactory
) -> None:
    server = server_factory(ping_interval=1)
    page = await browser.new_page()
    await page.goto(server.url + "/")
    assert page.url.endswith("/login")
    await page.fill("#api_key", server.api_key)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#connection[data-state='live']", timeout=LONG)
    cookies = await page.context.cookies()
    [key_cookie] = [c for c in cookies if c["name"] == "steplog_key"]
    assert key_cookie["httpOnly"] and key_cookie["sameSite"] == "Strict"
    run = start(server, "ticker", count=3, interval_ms=50)
    row = f"#runs tr[data-run='{run['run_id']}'][data-status='succeeded']"
    await page.wait_for_selector(row, timeout=LONG)  # appeared and finished, without a reload
    await page.select_option("#filter-status", "failed")
    await expect(page.locator(row)).to_have_count(0, timeout=LONG)  # the list reloads filtered
    await page.close()


async def test_start_a_ticker_from_the_form(
    browser: Browser, server_factory: ServerFactory
) -> None:
    server = server_factory(ping_interval=1)
    page = await browser.new_page()
    await page.goto(server.url + "/login")
    await page.fill("#api_key", server.api_key)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#start-ticker", timeout=LONG)
    await page.fill("#ticker-count", "4")
    await page.fill("#ticker-interval", "50")
    await page.click("#start-ticker button")
    await page.wait_for_url("**/runs/*", timeout=LONG)
    await page.wait_for_selector("#status[data-status='succeeded']", timeout=LONG)
    assert await timeline(page) == ["tick:done"]
    await page.close()


# ---- steplog tail -----------------------------------------------------------------------------


def tail(server: ServerProcess, run_id: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream", "tail", run_id, "--url", server.url, *args],
        env={**os.environ, "STEPLOG_API_KEY": server.api_key},
        capture_output=True,
        text=True,
        timeout=60,
    )


def log_of(server: ServerProcess, run_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.url}/runs/{run_id}/log", headers=server.headers)
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def test_tail_json_on_a_finished_run_prints_exactly_its_events(server: ServerProcess) -> None:
    run = start(server, "ticker", count=5, interval_ms=0)
    done = tail(server, run["run_id"], "--json")  # follows to the end first
    assert done.returncode == 0, done.stderr
    again = tail(server, run["run_id"], "--json")
    assert again.returncode == 0
    printed = [json.loads(line) for line in again.stdout.splitlines()]
    assert printed == log_of(server, run["run_id"])


def test_tail_follows_a_live_run_to_the_end(server: ServerProcess) -> None:
    run = start(server, "ticker", count=15, interval_ms=50)
    done = tail(server, run["run_id"], "--json")
    assert done.returncode == 0, done.stderr
    seqs = [json.loads(line)["seq"] for line in done.stdout.splitlines()]
    assert seqs == list(range(1, run_record(server, run["run_id"])["last_seq"] + 1))


def test_tail_exit_status_names_how_the_run_ended(server: ServerProcess) -> None:
    failed = start(server, "ticker", count=5, interval_ms=0, fail_at=2)
    result = tail(server, failed["run_id"])
    assert result.returncode == 1
    assert "run.failed" in result.stdout


SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "run-view.png"


async def test_demo_scrape_started_from_the_form_shows_every_step_and_the_card(
    browser: Browser, server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(demo=1, ping_interval=1)
    page = await browser.new_page(viewport={"width": 1100, "height": 900})
    await page.goto(server.url + "/login")
    await page.fill("#api_key", server.api_key)
    await page.click("button[type=submit]")
    await expect(page.locator("#scrape-url")).to_have_value(
        re.compile(r"/demo/in/ada-lovelace$"), timeout=LONG
    )
    await page.click("#start-scrape button")
    await page.wait_for_url("**/runs/*", timeout=LONG)
    await page.wait_for_selector("#status[data-status='succeeded']", timeout=90_000)
    await page.wait_for_selector("#card .name", timeout=LONG)
    names = [row.split(":")[0] for row in await timeline(page)]
    core = [n for n in names if n in {"launch", "navigate", "expand", "extract", "sanitize",
                                      "analyze", "done"}]  # fmt: skip
    assert core == ["launch", "navigate", "expand", "extract", "sanitize", "analyze", "done"]
    assert all(row.endswith(":done") for row in await timeline(page))
    assert "Ada" in await page.inner_text("#card .name")
    assert await page.inner_text("#pct") == "100%"
    shot = SCREENSHOT if os.environ.get("STEPLOG_UPDATE_SCREENSHOT") else tmp_path / "run.png"
    await page.screenshot(path=str(shot), full_page=True)
    await page.close()
