"""`scrape_batch`: many profiles in one run, a few pages at a time on one browser.

Each URL is its own step group: a durable step `url 3/50: host/path` around its
sub-steps (`url 3/50 · navigate`, `· expand`, `· extract`, `· analyze`), so
the stream view's step list and timeline show the batch URL by URL. A finished
URL is recorded with its result: a worker killed at URL 23 of 50 comes back,
shows 1 to 22 as reused without loading a page, and goes on at 23. URLs run in
order, `concurrency` at a time, each in a browser context of its own (its own
cookies, target guard and egress proxy) on the worker's one Chromium.

One URL failing does not fail the batch: a transient failure is tried once more,
then the URL is listed under `errors` and the others go on. The run fails when
every URL failed (`fail_when="all"`, the default), when any did (`"any"`), or
never (`"never"`). Failures are not recorded as durable, so a retried run tries
them again. The percentage is the share of URLs done (an unfinished URL counts
by its stage); a retry starts where the last attempt was, and it never goes down.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

from functions.context import Context
from functions.errors import LogUnavailable, PermanentError, TransientError, is_transient
from functions.faults import describe
from functions.registry import function
from functions.scrape.batch_params import DEFAULT_BATCH_TIMEOUT, BatchParams
from functions.scrape.browser import open_session
from functions.scrape.egress.targets import Guard, check_url
from functions.scrape.extract import build_profile
from functions.scrape.pages import (
    RENDER_MARGIN_S,
    LoginRequired,
    behind_login,
    capture,
    load,
    log_in,
)
from functions.scrape.params import CREDENTIALS_ENV, ScrapeParams, credentials_for
from functions.scrape.recipe import choose
from functions.scrape.render import wait_rendered
from functions.scrape.result.analyze import analyzer_name, load_analyzer, run_analyzer
from functions.scrape.result.dedupe import dedupe
from functions.scrape.result.sanitize import sanitize
from storage import EventType, LeaseLost, RunFinished

START_PCT = 2.0
END_PCT = 98.0
STEP_GRACE = 1.0
URL_TRIES = 2
"""A URL that fails with a transient error is tried once more before it is listed as failed."""
SHORT_URL = 80
STAGE = {"navigate": 0.15, "expand": 0.3, "extract": 0.75, "analyze": 0.85}
"""How far into its own work a URL is when each sub-step starts (0 to 1)."""


def group_name(index: int, total: int, url: str) -> str:
    """`url 3/50: example.org/in/ada`: the step the stream view lists for one URL."""
    parts = urlsplit(url)
    shown = f"{parts.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")
    if len(shown) > SHORT_URL:
        shown = shown[: SHORT_URL - 1] + "…"
    return f"url {index}/{total}: {shown}"


def sub_step(index: int, total: int, name: str) -> str:
    return f"url {index}/{total} · {name}"


@dataclass
class Batch:
    """The shared state of one attempt: per-URL progress, outcomes, counts."""

    ctx: Context
    params: BatchParams
    analyzer: str
    as_of: date
    done: dict[int, float] = field(default_factory=dict)
    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    errors: dict[int, dict[str, Any]] = field(default_factory=dict)
    reused: int = 0

    @property
    def total(self) -> int:
        return len(self.params.urls)

    def advance(self, index: int, fraction: float) -> None:
        """URL `index` got this far; the run's percentage follows, and never goes down."""
        self.done[index] = max(self.done.get(index, 0.0), fraction)
        share = sum(self.done.values()) / self.total
        pct = round(START_PCT + (END_PCT - START_PCT) * share, 1)
        self.ctx.pct = max(self.ctx.pct or 0.0, pct)

    def counts(self) -> dict[str, int]:
        finished = len(self.results) + len(self.errors)
        return {
            "total": self.total,
            "succeeded": len(self.results),
            "failed": len(self.errors),
            "reused": self.reused,
            "pending": self.total - finished,
        }

    async def report(self, step: str, message: str) -> None:
        """A progress event on the URL's own step, carrying the batch's counts."""
        await self.ctx.emit(
            EventType.STEP_PROGRESS,
            step=step,
            message=message,
            pct=self.ctx.pct,
            data={"batch": self.counts()},
        )


@function("scrape_batch", params=BatchParams, timeout=DEFAULT_BATCH_TIMEOUT)
async def scrape_batch(ctx: Context, params: BatchParams) -> dict[str, Any]:
    """Scrape many profile pages, a few at a time; each finished URL is kept across retries."""
    analyzer = analyzer_name()
    load_analyzer(analyzer)  # a bad setting fails now, before any page is loaded
    batch = Batch(ctx, params, analyzer, params.as_of or datetime.now(UTC).date())
    ctx.pct = max(ctx.pct or 0.0, await ctx.earlier_pct() or 0.0, START_PCT)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(1, batch.total + 1):
        queue.put_nowait(index)
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(params.concurrency, batch.total)):
                group.create_task(_worker(batch, queue))
    except BaseExceptionGroup as failed:
        # Only what must stop the whole run gets here (a lost lease, the log failing):
        # raise the first such error itself, as a single scrape would.
        raise failed.exceptions[0] from None
    finally:
        ctx.current_step = None  # concurrent steps leave no current step behind
    return await _outcome(batch)


async def _worker(batch: Batch, queue: asyncio.Queue[int]) -> None:
    while True:
        try:
            index = queue.get_nowait()
        except asyncio.QueueEmpty:
            return
        await _one(batch, index)


async def _one(batch: Batch, index: int) -> None:
    """Scrape URL `index` as one durable step; a failure is listed, not raised."""
    ctx, url = batch.ctx, batch.params.urls[index - 1]
    name = group_name(index, batch.total, url)
    recorded = await ctx.recorded_result(name)
    if recorded is not None:
        batch.reused += 1
    for attempt in range(1, URL_TRIES + 1):
        try:
            result = await ctx.run_step(name, f"Scraping {url}", _scrape_url, batch, index, url)
        except (LeaseLost, RunFinished, LogUnavailable):
            raise
        except Exception as exc:
            transient = is_transient(exc) or isinstance(exc, TimeoutError)
            if transient and attempt < URL_TRIES:
                continue
            batch.errors[index] = {
                "index": index,
                "url": url,
                "error": describe(exc),
                "transient": transient,
            }
            batch.advance(index, 1.0)
            await batch.report(name, f"URL {index} of {batch.total} failed: {describe(exc)}")
            return
        batch.results[index] = {"index": index, **result}
        batch.advance(index, 1.0)
        counts = batch.counts()
        finished = counts["succeeded"] + counts["failed"]
        await batch.report(name, f"{finished} of {batch.total} URLs done")
        return


async def _scrape_url(batch: Batch, index: int, url: str) -> dict[str, Any]:
    """One URL from navigation to analysis, in its own browser context."""
    ctx, params = batch.ctx, batch.params
    timeout = params.step_timeout_s
    limit = timeout + STEP_GRACE
    total = batch.total
    recipe = choose(url, params.recipe)
    await check_url(url)  # a refused target fails before a browser context opens
    login = credentials_for(ScrapeParams.model_validate({"url": url}))
    async with contextlib.AsyncExitStack() as stack:
        session, _launched = await open_session(
            Guard(),
            label=f"run {ctx.run_id} attempt {ctx.attempt} url {index}/{total}",
            timeout_s=timeout,
        )
        stack.push_async_callback(session.close)
        host = urlsplit(url).netloc
        if login is not None and recipe.login is not None:
            message = f"Logging in to {host} (credentials from the {login[1]})"
            async with ctx.step(sub_step(index, total, "login"), message, timeout=limit):
                await log_in(session, recipe, url, login[0], timeout_s=timeout)
        batch.advance(index, STAGE["navigate"])
        async with ctx.step(sub_step(index, total, "navigate"), f"Opening {url}", timeout=limit):
            deadline = asyncio.get_running_loop().time() + timeout - RENDER_MARGIN_S
            page, _status = await load(session, url, timeout_s=timeout)
            await wait_rendered(page, recipe, deadline)
            session.guard.raise_if_refused()
            if await behind_login(page, recipe):
                raise LoginRequired(
                    f"{url} is behind a login: give one for {host} in {CREDENTIALS_ENV}"
                )
            final_url = page.url
        batch.advance(index, STAGE["expand"])
        step = sub_step(index, total, "expand")
        expand_limit = limit * (1 + params.max_pages)
        async with ctx.step(step, "Expanding sections and pages", timeout=expand_limit):
            main = await capture(
                session, final_url, recipe, timeout_s=timeout, reload=False,
                max_scrolls=params.max_pages,
            )  # fmt: skip
            pages: list[dict[str, Any]] = []
            seen, next_url = {main.get("url")}, main.get("next")
            while next_url and next_url not in seen and len(pages) < params.max_pages:
                page_found = await capture(
                    session, next_url, recipe, timeout_s=timeout, reload=True,
                    max_scrolls=params.max_pages,
                )  # fmt: skip
                pages.append(page_found)
                seen.add(next_url)
                next_url = page_found.get("next")
    batch.advance(index, STAGE["extract"])
    async with ctx.step(sub_step(index, total, "extract"), "Extracting and cleaning"):
        raw, sources = build_profile(main, pages, recipe)
        if not raw.get("name") and not raw.get("experience"):
            raise PermanentError(f"no profile found on {final_url} (recipe {recipe.name})")
        profile, originals = dedupe(sanitize(raw))
    batch.advance(index, STAGE["analyze"])
    step = sub_step(index, total, "analyze")
    async with ctx.step(step, f"Analyzing ({batch.analyzer})", timeout=timeout):
        analysis = await run_analyzer(batch.analyzer, profile, batch.as_of)
    return {
        "url": url,
        "final_url": final_url,
        "recipe": recipe.name,
        "sources": sources,
        "pages": 1 + len(pages),
        "profile": profile,
        "raw": originals,
        "analysis": {"analyzer": batch.analyzer, **analysis},
    }


async def _outcome(batch: Batch) -> dict[str, Any]:
    """The batch's result, or its failure when `fail_when` says the run failed."""
    counts = batch.counts()
    errors = [batch.errors[i] for i in sorted(batch.errors)]
    failed = counts["failed"]
    if errors and (
        batch.params.fail_when == "any"
        or (batch.params.fail_when == "all" and failed == batch.total)
    ):
        first = errors[0]
        message = (
            f"{failed} of {batch.total} URLs failed (fail_when={batch.params.fail_when});"
            f" URL {first['index']} ({first['url']}): {first['error']}"
        )
        if all(e["transient"] for e in errors):
            raise TransientError(message)
        raise PermanentError(message)
    batch.ctx.pct = 100.0
    await batch.ctx.emit(
        EventType.STEP_PROGRESS,
        message=f"{counts['succeeded']} of {batch.total} URLs scraped, {failed} failed",
        pct=100.0,
        data={"batch": counts},
    )
    return {
        **counts,
        "results": [batch.results[i] for i in sorted(batch.results)],
        "errors": errors,
    }
