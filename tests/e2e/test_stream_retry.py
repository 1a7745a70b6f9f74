"""The pages recover when a stream is refused: real server, real Chromium, no mocks.

A `429` (or a proxy's 502/503) closes an `EventSource` for good, and it cannot
see why; the pages then show it in the connection indicator and open a new
stream themselves, with back-off, from the last event they have.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.async_api import Browser, Response, expect

from tests.conftest import ServerFactory
from tests.e2e.test_stream_view import LONG, run_record, start, timeline


def stream_statuses(path: str, statuses: list[int]) -> Callable[[Response], None]:
    """A response listener recording the status of every request for the stream `path`."""

    def record(response: Response) -> None:
        if response.url.split("?")[0].endswith(path):
            statuses.append(response.status)

    return record


async def test_run_page_refused_by_the_token_cap_retries_and_shows_every_event_once(
    browser: Browser, server_factory: ServerFactory
) -> None:
    server = server_factory(max_streams_per_token=1, ping_interval=1)
    run = start(server, "ticker", count=40, interval_ms=250)
    first = await browser.new_page()
    await first.goto(server.url + run["view_url"])
    await first.wait_for_selector("#connection[data-state='live']", timeout=LONG)

    second = await browser.new_page()  # the same view_url, so the same run token
    statuses: list[int] = []
    second.on("response", stream_statuses(f"/runs/{run['run_id']}/events", statuses))
    await second.goto(server.url + run["view_url"])
    indicator = second.locator("#connection[data-state='unavailable']")
    await expect(indicator).to_have_text(
        re.compile(r"^unavailable \(retrying in \d+ s, last event id 0\)$"), timeout=LONG
    )
    assert 429 in statuses  # refused by the per-token cap, not by anything else
    assert run_record(server, run["run_id"])["status"] == "running"  # still live: no replay

    await first.close()  # frees the token's one stream
    await second.wait_for_selector("#connection[data-state='ended']", timeout=LONG)
    await second.wait_for_selector("#status[data-status='succeeded']", timeout=LONG)
    assert statuses[-1] == 200
    record = run_record(server, run["run_id"])
    assert await timeline(second) == ["tick:done"]  # the one step, once
    # The page counts an event only if its seq is past the last one it applied, so a
    # count equal to last_seq means it applied 1, 2, ..., last_seq: each once, none missed.
    assert int(await second.inner_text("#event-count")) == record["last_seq"]
    assert await second.inner_text("#pct") == "100%"
    await second.close()


async def test_runs_list_refused_by_the_server_cap_retries_and_updates_live(
    browser: Browser, server_factory: ServerFactory
) -> None:
    server = server_factory(max_streams=1, ping_interval=1)
    context = await browser.new_context()  # both tabs share the login cookie
    first = await context.new_page()
    await first.goto(server.url + "/login")
    await first.fill("#api_key", server.api_key)
    await first.click("button[type=submit]")
    await first.wait_for_selector("#connection[data-state='live']", timeout=LONG)

    second = await context.new_page()
    statuses: list[int] = []
    second.on("response", stream_statuses("/events", statuses))
    await second.goto(server.url + "/")
    await expect(second.locator("#connection[data-state='unavailable']")).to_have_text(
        re.compile(r"^unavailable \(retrying in \d+ s\)$"), timeout=LONG
    )
    assert 429 in statuses
    run = start(server, "ticker", count=3, interval_ms=50)  # while the list is cut off

    await first.close()
    await second.wait_for_selector("#connection[data-state='live']", timeout=LONG)
    row = f"#runs tr[data-run='{run['run_id']}'][data-status='succeeded']"
    await second.wait_for_selector(row, timeout=LONG)  # resumed from where it was: not missed
    assert len(await second.query_selector_all(f"#runs tr[data-run='{run['run_id']}']")) == 1
    await context.close()
