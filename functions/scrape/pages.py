"""What the scraper does in the browser: open a page, log in, expand, capture.

Every failure is sorted here into what can pass (a timeout, a 5xx, a dropped
connection: `TransientError`, retried with back-off) and what cannot (a 404, a
refused target, a login the site rejects: `PermanentError`), because the
browser reports all of them alike as a failed navigation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from functions.errors import PermanentError, TransientError
from functions.scrape.browser import Session
from functions.scrape.extract import collect
from functions.scrape.params import Credentials
from functions.scrape.recipe import Recipe
from functions.scrape.render import scroll, track, wait_rendered

if TYPE_CHECKING:
    from playwright.async_api import ElementHandle, Page

log = logging.getLogger("steplog.scrape.pages")

Say = Callable[[str], Awaitable[None]]
RENDER_MARGIN_S = 1.0
"""Waiting and scrolling stop this long before the step's time limit, to leave time to read."""

LAZY_WAIT_MS = 5000
CLICK_SETTLE_MS = 5000

OBSERVE_JS = """
() => {
  if (!window.__steplogMutations) {
    const counter = { count: 0 };
    new MutationObserver(() => { counter.count += 1; }).observe(document, {
      subtree: true, childList: true, attributes: true, characterData: true,
    });
    window.__steplogMutations = counter;
  }
  return window.__steplogMutations.count;
}
"""
SETTLED_JS = """
(before) => window.__steplogMutations.count > before
  && !document.querySelector('[aria-busy="true"]')
"""


class LoginRequired(PermanentError):
    """The page is behind a login and no (working) credentials were given."""


def status_error(url: str, status: int) -> Exception | None:
    """The error an HTTP status means for the run, or None when the page is usable."""
    if status < 400:
        return None
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    answered = f"{url} answered {status} {phrase}"
    if status >= 500 or status in (408, 425, 429):
        return TransientError(f"{answered}; that can pass, so the run is retried")
    if status in (404, 410):
        return PermanentError(f"{answered}: there is no page at that address")
    if status in (401, 403):
        return PermanentError(f"{answered}: access denied (are credentials needed?)")
    return PermanentError(answered)


async def load(session: Session, url: str, *, timeout_s: float) -> tuple[Page, int | None]:
    """Navigate the run's tab to `url`; map what went wrong onto transient/permanent."""
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    page = await session.page()
    track(page)  # before the first request: the render wait counts what is in flight
    try:
        response = await page.goto(url, wait_until="load", timeout=timeout_s * 1000)
    except PlaywrightTimeout:
        session.guard.raise_if_refused()
        raise TransientError(f"opening {url} timed out after {timeout_s:g}s") from None
    except PlaywrightError as exc:
        session.guard.raise_if_refused()
        reason = str(exc).split("\n", 1)[0].removeprefix("Page.goto: ")
        raise TransientError(f"opening {url} failed: {reason}") from None
    session.guard.raise_if_refused()
    status = response.status if response is not None else None
    if status is not None and (error := status_error(page.url, status)) is not None:
        raise error
    return page, status


async def behind_login(page: Page, recipe: Recipe) -> bool:
    """True when the page shows the recipe's login form instead of the profile."""
    if recipe.login is None:
        return False
    login_path = urlsplit(urljoin(page.url, recipe.login.url)).path
    if urlsplit(page.url).path.rstrip("/") == login_path.rstrip("/"):
        return True
    return await page.query_selector(recipe.login.wall) is not None


async def log_in(
    session: Session, recipe: Recipe, target: str, credentials: Credentials, *, timeout_s: float
) -> str:
    """Sign in through the site's login form; returns the page the site sent us to.

    Whatever goes wrong, the error carries neither the username nor the password:
    Playwright's messages can quote what was typed.
    """
    from playwright.async_api import Error as PlaywrightError

    assert recipe.login is not None
    login = recipe.login
    secrets = (credentials.username, credentials.password.get_secret_value())
    try:
        page, _status = await load(session, urljoin(target, login.url), timeout_s=timeout_s)
        await page.fill(login.username, credentials.username)
        await page.fill(login.password, credentials.password.get_secret_value())
        async with page.expect_navigation(wait_until="load", timeout=timeout_s * 1000):
            await page.click(login.submit)
        session.guard.raise_if_refused()
        if await behind_login(page, recipe) or (
            login.error and await page.query_selector(login.error) is not None
        ):
            raise LoginRequired("the site refused the login: check the credentials")
        return page.url
    except PlaywrightError as exc:
        session.guard.raise_if_refused()
        reason = _scrub(str(exc).split("\n", 1)[0], secrets)
        raise TransientError(f"logging in failed: {reason}") from None
    except (TransientError, PermanentError) as exc:
        raise type(exc)(_scrub(str(exc), secrets)) from None


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


async def expand(
    page: Page, recipe: Recipe, *, max_scrolls: int, deadline: float
) -> dict[str, int]:
    """Show everything: scroll (lazy sections, infinite lists), click "see more" until
    nothing changes. Scrolling stops when nothing new appears, after `max_scrolls` scrolls
    that did add something, or at `deadline` (loop time), whichever comes first."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    done = {"scrolls": 0, "clicks": 0, "lazy": 0, "scroll_limited": 0}

    async def scroll_down() -> None:
        budget = max_scrolls - done["scrolls"]
        if not recipe.expand.scroll or budget <= 0:
            return
        grown, limited = await scroll(page, recipe, budget, deadline)
        done["scrolls"] += grown
        done["scroll_limited"] = int(limited)

    await page.evaluate(OBSERVE_JS)
    await scroll_down()
    for section, ready in recipe.expand.lazy:
        if await page.query_selector(section) is None:
            continue  # this page has no such section (a pagination page, say)
        try:
            await page.wait_for_selector(ready, state="attached", timeout=LAZY_WAIT_MS)
            done["lazy"] += 1
        except PlaywrightTimeout:
            log.info("lazy section %r did not load on %s", section, page.url)
    while done["clicks"] < recipe.expand.max_clicks:
        button = await _next_button(page, recipe)
        if button is None:
            break
        before = await page.evaluate(OBSERVE_JS)
        await button.click()
        done["clicks"] += 1
        try:
            await page.wait_for_function(SETTLED_JS, arg=before, timeout=CLICK_SETTLE_MS)
        except PlaywrightTimeout:
            # It changed nothing: never click it again.
            await button.evaluate("(b) => b.setAttribute('data-steplog-inert', '')")
        await scroll_down()
    return done


async def _next_button(page: Page, recipe: Recipe) -> ElementHandle | None:
    for selector in recipe.expand.see_more:
        for handle in await page.query_selector_all(f"{selector}:not([data-steplog-inert])"):
            if await handle.is_visible() and await handle.is_enabled():
                return handle
    return None


async def capture(
    session: Session,
    url: str,
    recipe: Recipe,
    *,
    timeout_s: float,
    reload: bool,
    max_scrolls: int,
    say: Say | None = None,
) -> dict[str, Any]:
    """Expand and read one page (loading it first when `reload` or not on it yet)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    page = await session.page()
    if reload or page.url != url:
        page, _status = await load(session, url, timeout_s=timeout_s)
        await wait_rendered(page, recipe, deadline - RENDER_MARGIN_S, say)
    if await behind_login(page, recipe):
        raise LoginRequired(f"{url} is behind a login")
    expanded = await expand(
        page, recipe, max_scrolls=max_scrolls, deadline=deadline - RENDER_MARGIN_S
    )
    found = await collect(page, recipe)
    session.guard.raise_if_refused()
    found["expanded"] = expanded
    return found
