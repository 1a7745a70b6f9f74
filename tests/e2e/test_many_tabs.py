"""Many tabs, one browser: a dozen run pages and the runs list stay live together.

Over HTTP/1.1 a browser opens at most six connections per host; each view used
to hold its own EventSource, so the seventh tab sat at "connecting". Now every
tab of a browser shares one stream held by a SharedWorker (stream/web/static/hub.js,
`GET /streams`), and over HTTP/2 (`steplog serve --certfile/--keyfile`, or nginx
with `http2`) all streams share one connection anyway. Real server, real nginx,
real Chromium, one browser context (one profile) per test.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
from prometheus_client.parser import text_string_to_metric_families

from stream.http.tokens import mint
from tests.conftest import ServerFactory
from tests.e2e.conftest import CHROMIUM_ARGS, NginxFactory
from tests.e2e.tls import self_signed
from tests.support.api import token_key
from tests.support.launcher import ServerProcess, free_port
from tests.support.wait import wait_until

LONG = 30_000  # ms
TABS = 12
NO_SHARED_WORKER = "delete window.SharedWorker;"
"""An init script: the browser as one without SharedWorker (the per-run fallback)."""


@pytest.fixture
async def tls_browser(chromium: str) -> AsyncIterator[Browser]:
    """Chromium that accepts the tests' self-signed certificate (tests only)."""
    async with async_playwright() as playwright:
        args = [*CHROMIUM_ARGS, "--ignore-certificate-errors"]
        launched = await playwright.chromium.launch(executable_path=chromium, args=args)
        yield launched
        await launched.close()


def api(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=server.headers, verify=False, timeout=10)


def start_tickers(server: ServerProcess, count: int) -> list[dict[str, Any]]:
    """`count` long tickers (they end when the test cancels them)."""
    with api(server) as http:
        started = []
        for _ in range(count):
            response = http.post(
                "/runs", json={"function": "ticker", "params": {"count": 5000, "interval_ms": 100}}
            )
            assert response.status_code == 202, response.text
            started.append(response.json())
        return started


def open_streams(server: ServerProcess) -> float:
    text = httpx.get(f"{server.url}/metrics", verify=False, timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "steplog_open_streams":
                return float(sample.value)
    return 0.0


def wait_open_streams(server: ServerProcess, expected: int) -> None:
    wait_until(
        lambda: open_streams(server) == expected,
        20,
        what=f"steplog_open_streams to be {expected} (it is {open_streams(server)})",
    )


async def login(page: Page, base: str, server: ServerProcess) -> None:
    await page.goto(base + "/login")
    await page.fill("#api_key", server.api_key)
    await page.click("button[type=submit]")
    await page.wait_for_url(base + "/", timeout=LONG)


async def open_views(
    context: BrowserContext, base: str, server: ServerProcess, runs: list[dict[str, Any]]
) -> tuple[Page, list[Page]]:
    """The runs list (logged in) and one tab per run, all in `context`."""
    runs_list = await context.new_page()
    await login(runs_list, base, server)
    tabs = []
    for run in runs:
        tab = await context.new_page()
        await tab.goto(base + run["view_url"], timeout=LONG)
        tabs.append(tab)
    return runs_list, tabs


async def all_live_then_all_cancelled(
    server: ServerProcess, runs: list[dict[str, Any]], runs_list: Page, tabs: list[Page]
) -> None:
    """Every view live at once and receiving events; then each shows its run's end."""
    for tab in [runs_list, *tabs]:
        await expect(tab.locator("#connection")).to_have_attribute(
            "data-state", "live", timeout=LONG
        )
    for tab in tabs:  # events are arriving in every tab, not just a connection held open
        await expect(tab.locator("#event-count")).to_have_text(
            re.compile(r"^([8-9]|\d{2,})$"), timeout=LONG
        )
    with api(server) as http:
        for run in runs:
            assert http.post(f"/runs/{run['run_id']}/cancel").status_code < 300
    for run, tab in zip(runs, tabs, strict=True):
        await expect(tab.locator("#status")).to_have_attribute(
            "data-status", "cancelled", timeout=LONG
        )
        await expect(tab.locator("#connection")).to_have_attribute(
            "data-state", "ended", timeout=LONG
        )
        with api(server) as http:
            last_seq = http.get(f"/runs/{run['run_id']}").json()["last_seq"]
        # Counted only past the last seq applied: equal means every event once, none missed.
        await expect(tab.locator("#event-count")).to_have_text(str(last_seq), timeout=LONG)
        row = runs_list.locator(f"#runs tr[data-run='{run['run_id']}']")
        await expect(row).to_have_attribute("data-status", "cancelled", timeout=LONG)


async def test_a_dozen_run_pages_and_the_runs_list_share_one_stream_over_http1(
    browser: Browser, server_factory: ServerFactory
) -> None:
    server = server_factory(ping_interval=1, workers=TABS)
    runs = start_tickers(server, TABS)
    context = await browser.new_context()
    runs_list, tabs = await open_views(context, server.url, server, runs)
    for tab in [runs_list, *tabs]:
        await expect(tab.locator("#connection")).to_have_attribute(
            "data-state", "live", timeout=LONG
        )
    assert open_streams(server) == 1  # one stream for the whole browser
    await all_live_then_all_cancelled(server, runs, runs_list, tabs)
    await context.close()
    wait_open_streams(server, 0)  # the worker went with the last tab: nothing leaks


async def test_a_closed_tab_gives_its_run_and_token_back(
    browser: Browser, server_factory: ServerFactory
) -> None:
    # One stream per token: the closed tab's token is usable elsewhere only if the
    # shared stream really dropped it.
    server = server_factory(ping_interval=1, max_streams_per_token=1)
    closing, staying = start_tickers(server, 2)
    context = await browser.new_context()
    first = await context.new_page()
    await first.goto(server.url + closing["view_url"])
    second = await context.new_page()
    await second.goto(server.url + staying["view_url"])
    for tab in (first, second):
        await expect(tab.locator("#connection")).to_have_attribute(
            "data-state", "live", timeout=LONG
        )
    assert open_streams(server) == 1
    await first.close()

    elsewhere = await browser.new_context()  # another browser: its own shared stream
    other = await elsewhere.new_page()
    await other.goto(server.url + closing["view_url"])  # the same token: refused while held
    await expect(other.locator("#connection")).to_have_attribute("data-state", "live", timeout=LONG)
    count = int(await second.inner_text("#event-count"))
    await expect(second.locator("#event-count")).not_to_have_text(str(count), timeout=LONG)
    assert open_streams(server) == 2
    await elsewhere.close()
    await context.close()
    wait_open_streams(server, 0)


async def test_a_bad_link_is_its_own_tabs_error_and_an_expiring_one_its_own_notice(
    browser: Browser, server_factory: ServerFactory
) -> None:
    server = server_factory(ping_interval=1, token_ttl=6, max_stream_seconds=60)
    expiring, forged, kept = start_tickers(server, 3)
    context = await browser.new_context()
    # Minted here for an hour: this link outlives the server's 6 s ones.
    lasting = mint(token_key(server), kept["run_id"], int(time.time()) + 3600).value
    watcher = await context.new_page()
    await watcher.goto(f"{server.url}/runs/{kept['run_id']}?token={lasting}")
    short = await context.new_page()
    await short.goto(server.url + expiring["view_url"])
    bad = await context.new_page()
    await bad.goto(server.url + forged["view_url"].replace("token=", "token=0"))
    await expect(bad.locator("h1")).to_have_text("This link is not valid or has expired")
    for tab in (watcher, short):
        await expect(tab.locator("#connection")).to_have_attribute(
            "data-state", "live", timeout=LONG
        )
    # The short link expires: its stream ends, the shared stream comes back without it
    # (refused: expired), and only that tab says so.
    await expect(short.locator("#expired")).to_be_visible(timeout=LONG)
    await expect(short.locator("#connection")).to_have_attribute("data-state", "expired")
    count = int(await watcher.inner_text("#event-count"))
    await expect(watcher.locator("#event-count")).not_to_have_text(str(count), timeout=LONG)
    await expect(watcher.locator("#connection")).to_have_attribute("data-state", "live")
    await context.close()
    wait_open_streams(server, 0)


async def test_without_shared_worker_each_tab_opens_its_own_stream(
    browser: Browser, server_factory: ServerFactory
) -> None:
    server = server_factory(ping_interval=1)
    runs = start_tickers(server, 3)
    context = await browser.new_context()
    await context.add_init_script(NO_SHARED_WORKER)
    streamed: list[str] = []
    context.on("request", lambda request: streamed.append(request.url.split("?")[0]))
    runs_list, tabs = await open_views(context, server.url, server, runs)
    await all_live_then_all_cancelled(server, runs, runs_list, tabs)
    for run in runs:
        assert f"{server.url}/runs/{run['run_id']}/events" in streamed
    assert f"{server.url}/events" in streamed
    assert f"{server.url}/streams" not in streamed
    await context.close()
    wait_open_streams(server, 0)


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "own-streams"])
async def test_a_dozen_tabs_over_http2_direct(
    tls_browser: Browser, server_factory: ServerFactory, tmp_path: Path, shared: bool
) -> None:
    certfile, keyfile = self_signed(tmp_path / "tls")
    server = server_factory(ping_interval=1, workers=TABS, certfile=certfile, keyfile=keyfile)
    assert server.url.startswith("https://")
    runs = start_tickers(server, TABS)
    context = await tls_browser.new_context()
    if not shared:  # thirteen EventSources: only HTTP/2's one connection keeps them all live
        await context.add_init_script(NO_SHARED_WORKER)
    runs_list, tabs = await open_views(context, server.url, server, runs)
    protocol = await tabs[-1].evaluate(
        "performance.getEntriesByType('navigation')[0].nextHopProtocol"
    )
    assert protocol == "h2"
    await all_live_then_all_cancelled(server, runs, runs_list, tabs)
    await context.close()
    wait_open_streams(server, 0)


async def test_a_dozen_tabs_over_http2_through_nginx(
    tls_browser: Browser,
    server_factory: ServerFactory,
    nginx_factory: NginxFactory,
    tmp_path: Path,
) -> None:
    certfile, keyfile = self_signed(tmp_path / "tls")
    server = server_factory(ping_interval=1, workers=TABS)
    port = free_port()
    proxy = nginx_factory(
        [server.port],
        [
            ("    # listen 443 ssl http2;", f"    listen 127.0.0.1:{port} ssl http2;", 1),
            (
                "    # ssl_certificate     /etc/nginx/tls/steplog.crt;",
                f"    ssl_certificate {certfile};",
                1,
            ),
            (
                "    # ssl_certificate_key /etc/nginx/tls/steplog.key;",
                f"    ssl_certificate_key {keyfile};",
                1,
            ),
        ],
    )
    base = f"https://127.0.0.1:{port}"
    runs = start_tickers(server, TABS)
    context = await tls_browser.new_context()
    await context.add_init_script(NO_SHARED_WORKER)  # every tab its own stream: h2 carries them
    runs_list, tabs = await open_views(context, base, server, runs)
    await all_live_then_all_cancelled(server, runs, runs_list, tabs)
    log = proxy.access_log_once_it_has("/runs/")
    assert "HTTP/2.0" in log and "HTTP/1.1" not in log  # every request of the browser was h2
    await context.close()
    wait_open_streams(server, 0)
