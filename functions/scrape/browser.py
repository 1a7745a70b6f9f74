"""Chromium for the scraper: one browser per worker process, one fresh context per run.

Starting Chromium costs about a second, so the browser is started on first use
and shared by every run this process executes. Runs never share state: each
gets its own browser context (cookies, storage, cache), with service workers
blocked (they could answer requests where route interception cannot see them),
every request checked by the run's `Guard`, and every connection sent through
the run's egress proxy. The context is closed when the run ends, however it
ends: success, failure, cancellation or a lost lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from functions.errors import PermanentError
from functions.scrape.egress.proxy import EgressProxy
from functions.scrape.egress.targets import Guard

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page, Playwright

log = logging.getLogger("steplog.scrape.browser")

CHROMIUM_ENV = "STEPLOG_CHROMIUM"
SYSTEM_CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--dns-prefetch-disable",
    # WebRTC could otherwise send UDP around the proxy, straight to any address.
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
)
CLOSE_TIMEOUT = 10.0


class ChromiumNotFound(PermanentError):
    """No Chromium to drive: a setup problem, so retrying would not help."""


def find_chromium(env: Mapping[str, str] | None = None, bundled: str | None = None) -> str:
    """`STEPLOG_CHROMIUM`, else Debian's `/usr/bin/chromium`, else Playwright's own browser."""
    env = os.environ if env is None else env
    configured = env.get(CHROMIUM_ENV, "").strip()
    if configured:
        if _executable(configured):
            return configured
        raise ChromiumNotFound(f"{CHROMIUM_ENV}={configured!r} is not an executable file")
    if _executable(SYSTEM_CHROMIUM):
        return SYSTEM_CHROMIUM
    if bundled and _executable(bundled):
        return bundled
    raise ChromiumNotFound(
        "no Chromium found: set STEPLOG_CHROMIUM to a Chromium binary, install Debian's"
        f" chromium ({SYSTEM_CHROMIUM}), or install Playwright's own browser"
        " (`playwright install chromium`)"
    )


def _executable(path: str) -> bool:
    return Path(path).is_file() and os.access(path, os.X_OK)


class SharedBrowser:
    """The process's browser, started on first use and restarted if it died."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self.executable: str | None = None
        self.open_contexts = 0
        self.launches = 0

    def _bind(self) -> asyncio.Lock:
        """Playwright objects belong to one event loop; a new loop starts afresh."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._lock is None:
            self._loop, self._lock = loop, asyncio.Lock()
            self._playwright = self._browser = None
            self.open_contexts = 0
        return self._lock

    @property
    def running(self) -> bool:
        return self._browser is not None and self._browser.is_connected()

    async def get(self) -> tuple[Browser, bool]:
        """The browser, and whether it was launched by this call."""
        async with self._bind():
            if self._browser is not None and self._browser.is_connected():
                return self._browser, False
            from playwright.async_api import async_playwright

            if self._playwright is None:
                self._playwright = await async_playwright().start()
            path = find_chromium(bundled=_bundled_path(self._playwright))
            self._browser = await self._playwright.chromium.launch(
                executable_path=path, args=list(LAUNCH_ARGS), headless=True
            )
            self.executable = path
            self.launches += 1
            log.info("launched Chromium %s (%s)", self._browser.version, path)
            return self._browser, True

    async def close(self) -> None:
        """Close the browser and Playwright (tests, and a worker shutting down)."""
        async with self._bind():
            browser, playwright = self._browser, self._playwright
            self._browser = self._playwright = None
            if browser is not None:
                with contextlib.suppress(Exception):
                    await browser.close()
            if playwright is not None:
                with contextlib.suppress(Exception):
                    await playwright.stop()


def _bundled_path(playwright: Playwright) -> str | None:
    try:
        return playwright.chromium.executable_path
    except Exception:
        return None


shared = SharedBrowser()
_closing: set[asyncio.Task[None]] = set()


class Session:
    """One run's browser context, its guard and its egress proxy."""

    def __init__(
        self, context: BrowserContext, guard: Guard, proxy: EgressProxy, label: str
    ) -> None:
        self.context = context
        self.guard = guard
        self.proxy = proxy
        self.label = label
        self._page: Page | None = None
        self.closed = False

    async def page(self) -> Page:
        """The run's one tab (opened on first use)."""
        if self._page is None or self._page.is_closed():
            self._page = await self.context.new_page()
        return self._page

    async def close(self) -> None:
        """Close the context and the proxy, even while the run is being cancelled.

        The close runs in its own task and is shielded: a second cancellation
        (cancel endpoint plus lost lease) cannot abandon it half way.
        """
        if self.closed:
            return
        self.closed = True
        task = asyncio.get_running_loop().create_task(self._close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)
        await asyncio.shield(task)

    async def _close(self) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.context.close()
        except Exception as exc:
            log.warning("closing the browser context of %s failed: %s", self.label, exc)
        finally:
            await self.proxy.close()
            shared.open_contexts -= 1
            log.info(
                "closed the browser context of %s (open browser contexts in this process: %d)",
                self.label,
                shared.open_contexts,
            )


async def open_session(guard: Guard, *, label: str, timeout_s: float) -> tuple[Session, bool]:
    """A fresh context for one run; also says whether the browser had to be launched."""
    browser, launched = await shared.get()
    proxy = await EgressProxy(guard).start()
    try:
        context = await browser.new_context(
            service_workers="block",
            proxy={"server": proxy.server_url},
            accept_downloads=False,
            locale="en-US",
            user_agent=None,
        )
    except BaseException:
        await proxy.close()
        raise
    shared.open_contexts += 1
    session = Session(context, guard, proxy, label)
    try:
        context.set_default_timeout(timeout_s * 1000)
        context.set_default_navigation_timeout(timeout_s * 1000)
        await context.route("**/*", guard.route)
        await context.route_web_socket("**/*", guard.websocket)
    except BaseException:
        await session.close()
        raise
    return session, launched
