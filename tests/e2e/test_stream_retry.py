"""The pages recover when a stream is refused: real server, real Chromium, no mocks.

A `429` (or a proxy's 502/503) closes an `EventSource` for good, and it cannot
see why; the pages then show it in the connection indicator and open a new
stream themselves, with back-off, from the last event they have. Both ways a
page streams are covered: the stream shared by every tab of the browser (held by
a SharedWorker, whose requests a page's listener does not see: the server's
refusal counter does) and a page's own EventSource (the fallback).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.async_api import Browser, BrowserContext, Response, expect

from tests.conftest import ServerFactory
from tests.e2e.test_stream_view import LONG, run_record, start, timeline
from tests.support.launcher import ServerProcess
from tests.support.probes import metric

MODES = pytest.mark.parametrize("shared", [True, False], ids=["shared", "own-stream"])


async def context_for(browser: Browser, shared: bool) -> BrowserContext:
    """A browser profile; without SharedWorker unless `shared` (the per-run fallback)."""
    context = await browser.new_context()
    if not shared:
        await context.add_init_script("delete window.SharedWorker;")
    return context


def assert_refused(server: ServerProcess, shared: bool, statuses: list[int], reason: str) -> None:
    """The stream was answered 429 (seen by the page, or counted by the server)."""
    if shared:
        assert metric(server.url, "steplog_streams_refused_total", reason=reason) >= 1
    else:
        assert 429 in statuses


def stream_statuses(path: str, statuses: list[int]) -> Callable[[Response], None]:
    """A response listener recording the status of every request for the stream `path`."""

    def record(response: Response) -> None:
        if response.url.split("?")[0].endswith(path):
            statuses.append(response.status)

    return record


@MODES
async def test_run_page_refused_by_the_token_cap_retries_and_shows_every_event_once(
    browser: Browser, server_factory: ServerFactory, shared: bool
) -> None:
    server = server_factory(max_streams_per_token=1, ping_interval=1)
    run = start(server, "ticker", count=40, interval_ms=250)
    first_browser = await context_for(browser, shared)  # two browsers: two shared streams
    first = await first_browser.new_page()
    await first.goto(server.url + run["view_url"])
    await first.wait_for_selector("#connection[data-state='live']", timeout=LONG)

    second_browser = await context_for(browser, shared)
    second = await second_browser.new_page()  # the same view_url, so the same run token
    statuses: list[int] = []
    second.on("response", stream_statuses(f"/runs/{run['run_id']}/events", statuses))
    await second.goto(server.url + run["view_url"])
    indicator = second.locator("#connection[data-state='unavailable']")
    await expect(indicator).to_have_text(
        re.compile(r"^unavailable \(retrying in \d+ s, last event id 0\)$"), timeout=LONG
    )
    assert_refused(server, shared, statuses, "token_cap")  # by the per-token cap, nothing else
    assert run_record(server, run["run_id"])["status"] == "running"  # still live: no replay

    await first_browser.close()  # frees the token's one stream
    await second.wait_for_selector("#connection[data-state='ended']", timeout=LONG)
    await second.wait_for_selector("#status[data-status='succeeded']", timeout=LONG)
    assert shared or statuses[-1] == 200
    record = run_record(server, run["run_id"])
    assert await timeline(second) == ["tick:done"]  # the one step, once
    # The page counts an event only if its seq is past the last one it applied, so a
    # count equal to last_seq means it applied 1, 2, ..., last_seq: each once, none missed.
    assert int(await second.inner_text("#event-count")) == record["last_seq"]
    assert await second.inner_text("#pct") == "100%"
    await second_browser.close()


@MODES
async def test_runs_list_refused_by_the_server_cap_retries_and_updates_live(
    browser: Browser, server_factory: ServerFactory, shared: bool
) -> None:
    server = server_factory(max_streams=1, ping_interval=1)
    context = await context_for(browser, shared)
    first = await context.new_page()
    await first.goto(server.url + "/login")
    await first.fill("#api_key", server.api_key)
    await first.click("button[type=submit]")
    await first.wait_for_selector("#connection[data-state='live']", timeout=LONG)

    # Shared: tabs of one browser share the stream, so the second tab is another
    # browser (logged in with the same cookie); own streams: another tab.
    other = context
    if shared:
        other = await context_for(browser, shared)
        await other.add_cookies(await context.cookies())  # type: ignore[arg-type]
    second = await other.new_page()
    statuses: list[int] = []
    second.on("response", stream_statuses("/events", statuses))
    await second.goto(server.url + "/")
    await expect(second.locator("#connection[data-state='unavailable']")).to_have_text(
        re.compile(r"^unavailable \(retrying in \d+ s\)$"), timeout=LONG
    )
    assert_refused(server, shared, statuses, "server_cap")
    run = start(server, "ticker", count=3, interval_ms=50)  # while the list is cut off

    await first.close()
    await second.wait_for_selector("#connection[data-state='live']", timeout=LONG)
    row = f"#runs tr[data-run='{run['run_id']}'][data-status='succeeded']"
    await second.wait_for_selector(row, timeout=LONG)  # resumed from where it was: not missed
    assert len(await second.query_selector_all(f"#runs tr[data-run='{run['run_id']}']")) == 1
    await other.close()
    await context.close()
