"""`scrape`: drive headless Chromium through a profile page, one durable step at a time.

launch → login (only with credentials for a site whose recipe has a login form)
→ navigate → expand (the profile, then each pagination page) → extract →
sanitize → analyze → done. Each step is reported with a human message and an
overall percentage that only goes up.

The steps that load pages are durable (`ctx.run_step`): what they captured is
recorded in the log, so when a worker dies half way the next attempt reuses
those captures instead of loading the pages again, and does not even start a
browser when every page was captured. A retry starts its percentage where the
last attempt was, so the stream never goes backwards.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

from functions.context import Context
from functions.errors import PermanentError, TransientError
from functions.registry import function
from functions.scrape.browser import Session, open_session, shared
from functions.scrape.egress.targets import Guard, check_url
from functions.scrape.extract import build_profile
from functions.scrape.pages import (
    RENDER_MARGIN_S,
    LoginRequired,
    Say,
    behind_login,
    capture,
    load,
    log_in,
)
from functions.scrape.params import (
    CREDENTIALS_ENV,
    DEFAULT_RUN_TIMEOUT,
    Credentials,
    ScrapeParams,
    credentials_for,
)
from functions.scrape.recipe import Recipe, choose
from functions.scrape.render import wait_rendered
from functions.scrape.result.analyze import analyzer_name, load_analyzer, run_analyzer
from functions.scrape.result.dedupe import dedupe, merged_count
from functions.scrape.result.sanitize import sanitize

LAUNCH_TIMEOUT = 60.0
STEP_GRACE = 1.0
"""A step's own limit is `step_timeout_s` plus this, so that a page load that runs out of
time fails with the browser's precise message first; the step's limit is the backstop."""

STAGES = {
    "launch": 2.0,
    "login": 6.0,
    "navigate": 10.0,
    "expand": 16.0,
    "expand/profile": 18.0,
    "extract": 70.0,
    "sanitize": 78.0,
    "analyze": 86.0,
    "done": 96.0,
}


def page_stage(number: int) -> float:
    """Pagination page `number` (2, 3, …) lies between 24 % and 64 %, however many there are."""
    return round(24.0 + 40.0 * (1 - 0.75 ** (number - 1)), 1)


def page_step(number: int) -> str:
    return f"expand/page-{number}"


class Progress:
    """Sets the percentage the next events carry; it never goes down."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def at(self, pct: float) -> None:
        self.ctx.pct = max(self.ctx.pct or 0.0, pct)

    async def say(self, message: str, data: Any = None) -> None:
        await self.ctx.progress(self.ctx.pct or 0.0, message, data)


@dataclass(frozen=True, slots=True)
class Recorded:
    """How far earlier attempts got: whether every page is captured, and the next stage."""

    complete: bool
    resume_pct: float | None


async def recorded_pages(ctx: Context, max_pages: int) -> Recorded:
    """Walk the page captures earlier attempts recorded, in the order they are made."""
    if await ctx.recorded_result("navigate") is None:
        return Recorded(False, None)
    main = await ctx.recorded_result("expand/profile")
    if main is None:
        return Recorded(False, STAGES["expand/profile"])
    seen = {main[0].get("url")}
    next_url = main[0].get("next")
    number = 2
    while next_url and next_url not in seen and number - 1 <= max_pages:
        page = await ctx.recorded_result(page_step(number))
        if page is None:
            return Recorded(False, page_stage(number))
        seen.add(next_url)
        next_url = page[0].get("next")
        number += 1
    return Recorded(True, STAGES["extract"])


class StepTimeout(TransientError):
    """A step ran past its time limit: worth another attempt (the page may be faster then)."""


@function("scrape", params=ScrapeParams, timeout=DEFAULT_RUN_TIMEOUT)
async def scrape(ctx: Context, params: ScrapeParams) -> dict[str, Any]:
    """Scrape a profile page with headless Chromium: log in, expand, extract, clean, analyze."""
    try:
        return await _scrape(ctx, params)
    except TimeoutError as exc:
        # Only a step's own limit raises TimeoutError in here (the run's limit cancels
        # us instead); named as such, so the worker retries it rather than taking it
        # for the run's limit.
        raise StepTimeout(
            f"a step took longer than its time limit (step_timeout_s={params.step_timeout_s:g});"
            " see its step.failed event"
        ) from exc


async def _scrape(ctx: Context, params: ScrapeParams) -> dict[str, Any]:
    """The steps; everything that can be refused without a browser is refused first."""
    recipe = choose(params.url, params.recipe)
    login = credentials_for(params)
    analyzer = analyzer_name()
    load_analyzer(analyzer)  # a bad setting fails now, before any page is loaded
    await check_url(params.url)  # a refused target fails before the browser starts
    progress = Progress(ctx)
    recorded = await recorded_pages(ctx, params.max_pages)
    if recorded.resume_pct is not None:
        progress.at(recorded.resume_pct)

    async with contextlib.AsyncExitStack() as browser:
        session: Session | None = None
        if not recorded.complete:
            session = await _launch(ctx, progress, params, browser)
            if login is not None:
                await _login(ctx, progress, session, recipe, params, *login)
        progress.at(STAGES["navigate"])
        nav = await ctx.run_step(
            "navigate",
            f"Opening {params.url}",
            _navigate,
            session,
            params,
            recipe,
            login is not None,
            progress.say,
            timeout=params.step_timeout_s + STEP_GRACE,
        )
        main, pages = await _expand(ctx, progress, session, params, recipe, nav["final_url"])
    # The browser context is closed here: nothing below needs a page.

    progress.at(STAGES["extract"])
    async with ctx.step("extract", "Extracting profile data"):
        raw, sources = build_profile(main, pages, recipe)
        if not raw.get("name") and not raw.get("experience"):
            raise PermanentError(f"no profile found on {nav['final_url']} (recipe {recipe.name})")
        await progress.say(
            f"Found {len(raw['experience'])} positions, {len(raw['education'])} schools,"
            f" {len(raw['skills'])} skills ({', '.join(sources)})",
            {"sources": sources},
        )

    progress.at(STAGES["sanitize"])
    async with ctx.step("sanitize", "Cleaning text"):
        cleaned = sanitize(raw)
        changed = _changed_strings(raw, cleaned)
        profile, originals = dedupe(cleaned)
        merged = merged_count(originals, profile)
        await progress.say(
            f"Cleaned {changed} text fields, merged {merged} repeated list items",
            {"changed": changed, "merged": merged},
        )

    progress.at(STAGES["analyze"])
    as_of = params.as_of or datetime.now(UTC).date()
    analysis = await ctx.run_step(
        "analyze", f"Analyzing ({analyzer})", _analyze, analyzer, profile, as_of,
        timeout=params.step_timeout_s,
    )  # fmt: skip

    progress.at(STAGES["done"])
    async with ctx.step("done", "Done"):
        await ctx.progress(100, f"Scraped {profile.get('name') or nav['final_url']}")
    return {
        "url": params.url,
        "final_url": nav["final_url"],
        "recipe": recipe.name,
        "sources": sources,
        "pages": 1 + len(pages),
        "profile": profile,
        "raw": originals,
        "analysis": analysis,
    }


async def _launch(
    ctx: Context, progress: Progress, params: ScrapeParams, cleanup: contextlib.AsyncExitStack
) -> Session:
    """A fresh browser context for this attempt, closed by `cleanup` however the run ends."""
    progress.at(STAGES["launch"])
    async with ctx.step("launch", "Launching browser", timeout=LAUNCH_TIMEOUT):
        session, launched = await open_session(
            Guard(),
            label=f"run {ctx.run_id} attempt {ctx.attempt}",
            timeout_s=params.step_timeout_s,
        )
        cleanup.push_async_callback(session.close)  # before anything else can fail
        await progress.say(
            "Started Chromium" if launched else "Reusing this worker's Chromium",
            {"launched": launched, "open_contexts": shared.open_contexts},
        )
    return session


async def _login(
    ctx: Context,
    progress: Progress,
    session: Session,
    recipe: Recipe,
    params: ScrapeParams,
    credentials: Credentials,
    source: str,
) -> None:
    """Log in when there is a login for this site; the step never names the account."""
    host = urlsplit(params.url).netloc
    if recipe.login is None:
        await ctx.log(f"credentials for {host} were given, but recipe {recipe.name} has no login")
        return
    progress.at(STAGES["login"])
    message = f"Logging in to {host} (credentials from the {source})"
    async with ctx.step("login", message, timeout=params.step_timeout_s + STEP_GRACE):
        await log_in(session, recipe, params.url, credentials, timeout_s=params.step_timeout_s)


async def _navigate(
    session: Session | None,
    params: ScrapeParams,
    recipe: Recipe,
    logged_in: bool,
    say: Say | None = None,
) -> dict[str, Any]:
    """Open the page and wait until it has rendered (a client-rendered shell draws itself)."""
    assert session is not None, "a page step ran without a browser"
    deadline = asyncio.get_running_loop().time() + params.step_timeout_s - RENDER_MARGIN_S
    page, status = await load(session, params.url, timeout_s=params.step_timeout_s)
    await wait_rendered(page, recipe, deadline, say)
    session.guard.raise_if_refused()  # what the page's scripts fetched meanwhile
    if await behind_login(page, recipe):
        if logged_in:
            raise LoginRequired(f"{params.url} still shows the login form after logging in")
        raise LoginRequired(
            f"{params.url} is behind a login: give credentials in the params or in"
            f" {CREDENTIALS_ENV}"
        )
    return {"url": params.url, "final_url": page.url, "status": status, "title": await page.title()}


async def _expand(
    ctx: Context,
    progress: Progress,
    session: Session | None,
    params: ScrapeParams,
    recipe: Recipe,
    profile_url: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The profile's capture and each pagination page's, each a durable step of its own."""
    timeout = params.step_timeout_s
    limit = timeout + STEP_GRACE
    progress.at(STAGES["expand"])
    async with ctx.step("expand", "Expanding sections"):
        progress.at(STAGES["expand/profile"])
        main = await ctx.run_step(
            "expand/profile",
            "Expanding the profile (scrolling, opening 'see more')",
            _capture,
            session,
            profile_url,
            recipe,
            timeout,
            params.max_pages,
            timeout=limit,
        )
        if (main.get("expanded") or {}).get("scroll_limited"):
            await ctx.log(
                f"stopped scrolling after {params.max_pages} scrolls (max_pages) or the step's"
                " time limit; the list may go on"
            )
        pages: list[dict[str, Any]] = []
        seen = {main.get("url")}
        next_url = main.get("next")
        number = 2
        while next_url and next_url not in seen and number - 1 <= params.max_pages:
            progress.at(page_stage(number))
            page = await ctx.run_step(
                page_step(number),
                f"Loading page {number} of the list",
                _capture_page,
                session,
                next_url,
                recipe,
                timeout,
                params.max_pages,
                timeout=limit,
            )
            pages.append(page)
            seen.add(next_url)
            next_url = page.get("next")
            number += 1
        if next_url and next_url not in seen:
            await ctx.log(f"stopped after {params.max_pages} pages (max_pages)")
        items = sum(len(v or []) for v in (main.get("lists") or {}).values())
        items += sum(len(v or []) for p in pages for v in (p.get("lists") or {}).values())
        await progress.say(f"Expanded {1 + len(pages)} pages, {items} list items")
    return main, pages


async def _capture(
    session: Session | None, url: str, recipe: Recipe, timeout: float, max_scrolls: int
) -> dict[str, Any]:
    assert session is not None, "a page step ran without a browser"
    return await capture(
        session, url, recipe, timeout_s=timeout, reload=False, max_scrolls=max_scrolls
    )


async def _capture_page(
    session: Session | None, url: str, recipe: Recipe, timeout: float, max_scrolls: int
) -> dict[str, Any]:
    """A pagination page: only its lists and its own next link are kept."""
    assert session is not None, "a page step ran without a browser"
    found = await capture(
        session, url, recipe, timeout_s=timeout, reload=True, max_scrolls=max_scrolls
    )
    return {
        "url": found["url"],
        "lists": found["lists"],
        "next": found["next"],
        "expanded": found["expanded"],
    }


async def _analyze(analyzer: str, profile: dict[str, Any], as_of: date) -> dict[str, Any]:
    result = await run_analyzer(analyzer, profile, as_of)
    return {"analyzer": analyzer, **result}


def _changed_strings(before: Any, after: Any) -> int:
    """How many strings sanitizing changed (shown to the person watching)."""
    if isinstance(before, str):
        return int(before != after)
    if isinstance(before, list) and isinstance(after, list):
        return sum(_changed_strings(b, a) for b, a in zip(before, after, strict=False))
    if isinstance(before, dict) and isinstance(after, dict):
        return sum(_changed_strings(v, after.get(k)) for k, v in before.items())
    return 0
