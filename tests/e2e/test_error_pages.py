"""Errors are pages: a bad link or a wrong key says so, instead of an empty run view."""

from __future__ import annotations

import time

from playwright.async_api import Browser, expect

from stream.http.tokens import mint
from tests.conftest import ServerFactory
from tests.e2e.test_stream_view import LONG, start
from tests.support.api import token_key

MESSAGE = "This link is not valid or has expired"


async def test_wrong_api_key_on_the_login_form_says_so(
    browser: Browser, server_factory: ServerFactory
) -> None:
    server = server_factory(ping_interval=1)
    page = await browser.new_page()
    await page.goto(server.url + "/login")
    assert await page.locator("#login-error").is_hidden()
    await page.fill("#api_key", "not-the-key")
    await page.click("button[type=submit]")
    await expect(page.locator("#login-error")).to_be_visible(timeout=LONG)
    await expect(page.locator("#login-error")).to_contain_text("not valid")
    assert "not-the-key" not in await page.content()  # the key typed is never echoed
    await page.fill("#api_key", server.api_key)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#runs", timeout=LONG)
    await page.close()


async def test_every_bad_run_link_is_the_same_full_page(
    browser: Browser, server_factory: ServerFactory
) -> None:
    """Unknown run, another run's token, a forged, an expired or no token: one page, one
    text, one status, and the page never opens a stream."""
    server = server_factory(ping_interval=1)
    run = start(server, "ticker", count=2, interval_ms=10)
    other = start(server, "ticker", count=2, interval_ms=10)
    run_id = run["run_id"]
    expired = mint(token_key(server), run_id, int(time.time()) - 60).value
    unknown = run_id[:-4] + ("aaaa" if not run_id.endswith("aaaa") else "bbbb")
    links = {
        "no token": f"/runs/{run_id}",
        "expired": f"/runs/{run_id}?token={expired}",
        "forged": f"/runs/{run_id}?token=v1.{'x' * 40}",
        "another run's token": f"/runs/{run_id}?token={other['token']}",
        "unknown run": f"/runs/{unknown}?token={run['token']}",
        "not a run id": "/runs/not-a-run?token=x",
    }
    page = await browser.new_page()
    streams: list[str] = []
    page.on(
        "request", lambda request: streams.append(request.url) if "/events" in request.url else None
    )
    texts = set()
    for what, link in links.items():
        response = await page.goto(server.url + link)
        assert response is not None and response.status == 404, what
        heading = page.locator("h1")
        await expect(heading).to_have_text(MESSAGE)
        texts.add(await page.inner_text("main"))
        assert await page.locator("#steps").count() == 0, what  # no skeleton behind it
    assert len(texts) == 1  # nothing tells an unknown run from a forbidden one
    assert streams == []
    # The JSON API still answers problem+json, unchanged.
    api = await page.request.get(
        f"{server.url}/runs/{unknown}", headers={**server.headers, "Accept": "application/json"}
    )
    assert api.status == 404
    assert api.headers["content-type"].startswith("application/problem+json")
    await page.close()
