"""Pages that draw themselves: wait for the content, look inside shadow roots, keep scrolling.

Most profile sites send an empty shell and a spinner, then fetch the profile and
render it; the `load` event says nothing about that. So after navigating, the
scraper waits until the page shows what the recipe identifies a profile by (its
`ready` selectors, by default the name field's and each list item's selector,
or a schema.org `Person` in JSON-LD or microdata), or until the page went quiet:
no request in flight and no DOM change for `QUIET_MS`. Whichever comes first,
bounded by the step's time limit; on that limit the page is read as it is.

"In flight" is counted here, in Python, from the browser's request events,
leaving out what never finishes by design (an `EventSource`, a WebSocket, media),
so a page holding a live stream open still counts as quiet.

`DEEP_JS` is how every selector reaches open shadow roots and same-origin
iframes: it searches the document, then each open shadow root and each
same-origin iframe's document (recursively), each on its own, in document order.
A selector therefore never spans a boundary (`my-card h1` does not reach an `h1`
inside `my-card`'s shadow root; `h1` does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from functions.scrape.recipe import Recipe

if TYPE_CHECKING:
    from playwright.async_api import Page, Request

log = logging.getLogger("steplog.scrape.render")

QUIET_MS = 500
"""No request in flight and no DOM change for this long: the page has rendered."""
POLL_S = 0.1
SCROLL_SETTLE_MS = 400
"""After a scroll, how long nothing may grow (with no request in flight) before it is the end."""
SCROLL_FETCH_WAIT_MS = 5000
"""How long a scroll waits for growth while the page's requests are still in flight."""
LONG_LIVED = frozenset({"eventsource", "websocket", "media"})

DEEP_JS = """
const steplogRoots = () => {
  const found = [];
  const visit = (root) => {
    found.push(root);
    for (const el of root.querySelectorAll("*")) {
      if (el.shadowRoot) visit(el.shadowRoot);
      if (el.tagName === "IFRAME" || el.tagName === "FRAME") {
        let inner = null;
        try { inner = el.contentDocument; } catch (e) { inner = null; }
        if (inner && inner.documentElement) visit(inner);
      }
    }
  };
  visit(document);
  return found;
};
const steplogAll = (roots, selector) => {
  const out = [];
  for (const root of roots) {
    try { out.push(...root.querySelectorAll(selector)); } catch (e) { return []; }
  }
  return out;
};
const steplogOne = (roots, selector) => {
  for (const root of roots) {
    let el = null;
    try { el = root.querySelector(selector); } catch (e) { return null; }
    if (el) return el;
  }
  return null;
};
"""

STATE_JS = (
    "(spec) => {"
    + DEEP_JS
    + """
  if (!window.__steplogChanged) {
    window.__steplogChanged = { at: performance.now() };
    new MutationObserver(() => { window.__steplogChanged.at = performance.now(); }).observe(
      document, { subtree: true, childList: true, attributes: true, characterData: true });
  }
  const roots = steplogRoots();
  const person = steplogAll(roots, 'script[type^="application/ld+json"]')
    .some((s) => /"Person"|schema\\.org\\/Person/.test(s.textContent || ""))
    || steplogOne(roots, '[itemscope][itemtype*="schema.org/Person"]') !== null;
  const ready = person || spec.ready.some((sel) => steplogOne(roots, sel) !== null);
  const busy = steplogOne(roots, '[aria-busy="true"]') !== null;
  let items = 0;
  for (const sel of spec.items) items += steplogAll(roots, sel).length;
  return {
    ready, busy, items,
    quiet_ms: performance.now() - window.__steplogChanged.at,
    height: document.documentElement.scrollHeight,
  };
}
"""
)

SCROLL_JS = """
() => {
  window.scrollTo(0, document.documentElement.scrollHeight);
  return document.documentElement.scrollHeight;
}
"""


def render_spec(recipe: Recipe) -> dict[str, Any]:
    """What identifies a rendered profile for this recipe, and which list items to count."""
    items = [str(spec["item"]) for spec in recipe.lists.values() if spec.get("item")]
    ready = list(recipe.expand.ready)
    if not ready:
        name = recipe.fields.get("name")
        css = name if isinstance(name, str) else (name or {}).get("selector")
        ready = ([css] if css else []) + items
    if recipe.login is not None:
        ready.append(recipe.login.wall)  # a login wall is a rendered page too
    return {"ready": ready, "items": items}


class Inflight:
    """The page's requests still in flight, long-lived streams left out."""

    def __init__(self) -> None:
        self.pending: set[Request] = set()

    def started(self, request: Request) -> None:
        if request.resource_type not in LONG_LIVED:
            self.pending.add(request)

    def ended(self, request: Request) -> None:
        self.pending.discard(request)

    @property
    def count(self) -> int:
        return len(self.pending)


def track(page: Page) -> Inflight:
    """The in-flight counter of `page`, attached on first use (before its first navigation)."""
    found: Inflight | None = getattr(page, "_steplog_inflight", None)
    if found is None:
        found = Inflight()
        page.on("request", found.started)
        page.on("requestfinished", found.ended)
        page.on("requestfailed", found.ended)
        page._steplog_inflight = found  # type: ignore[attr-defined]
    return found


async def page_state(page: Page, spec: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = await page.evaluate(STATE_JS, spec)
    return state


async def wait_rendered(
    page: Page,
    recipe: Recipe,
    deadline: float,
    say: Callable[[str], Awaitable[None]] | None = None,
) -> str:
    """Wait until the page shows a profile or went quiet; returns which ("ready", "quiet",
    "deadline"). `say` is told once, when there is something to wait for."""
    from playwright.async_api import Error as PlaywrightError

    loop = asyncio.get_running_loop()
    spec = render_spec(recipe)
    inflight = track(page)
    told = False
    while True:
        try:
            state = await page_state(page, spec)
        except PlaywrightError as exc:  # the page navigated on its own: read the new one
            log.info("reading %s while it rendered failed: %s", page.url, exc)
            state = {"ready": False, "busy": True, "quiet_ms": 0}
        if state["ready"] and not state["busy"]:
            return "ready"
        if not state["busy"] and inflight.count == 0 and state["quiet_ms"] >= QUIET_MS:
            return "ready" if state["ready"] else "quiet"
        if loop.time() + POLL_S >= deadline:
            log.info(
                "%s had not rendered when the step's time ran out; reading it as it is", page.url
            )
            return "deadline"
        if not told and say is not None:
            told = True
            await say("Waiting for the page to render")
        await asyncio.sleep(POLL_S)


async def scroll(page: Page, recipe: Recipe, max_rounds: int, deadline: float) -> tuple[int, bool]:
    """Scroll to the bottom while new list items (or height) keep appearing.

    Returns the scrolls that made the page grow, and whether the bound
    (`max_rounds` or the deadline) stopped it while it was still growing.
    """
    spec = render_spec(recipe)
    inflight = track(page)
    loop = asyncio.get_running_loop()
    grown = 0
    while grown < max_rounds:
        before = await page_state(page, spec)
        await page.evaluate(SCROLL_JS)
        scrolled = loop.time()
        while True:
            await asyncio.sleep(POLL_S)
            now = await page_state(page, spec)
            if now["items"] > before["items"] or now["height"] > before["height"]:
                grown += 1
                break
            waited = (loop.time() - scrolled) * 1000
            busy = inflight.count > 0 or now["busy"]
            if waited >= (SCROLL_FETCH_WAIT_MS if busy else SCROLL_SETTLE_MS):
                return grown, False
            if loop.time() >= deadline:
                return grown, True
        if loop.time() >= deadline:
            return grown, True
    return grown, True
