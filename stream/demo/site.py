"""The demo site's routes: a login, profile pages, and the hard cases the scraper must survive.

Test hooks are part of the site on purpose, since it exists for demos and tests:
`?delay_ms=` (a slow page), `?fail_once=KEY` (500 the first time), trap pages
for the SSRF tests, a request log (`GET /demo/_requests`) that proves which
pages were fetched and how often, and a count of pages still open in some
browser (each page holds a `/demo/_beacon` stream while it lives), which proves
a scraper closed its browser context.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from quart import Blueprint, Response, current_app, render_template, request
from werkzeug.exceptions import BadRequest, NotFound

from storage.jsonenc import dumps
from stream.demo.content import (
    PROFILE_INLINE,
    PROFILE_MAX,
    SEE_MORE_BATCH,
    Profile,
    month_label,
    person_jsonld,
    profiles,
    users,
)

SESSION_COOKIE = "demo_session"
MAX_DELAY_MS = 60_000
LOG_LIMIT = 10_000
BEACON_PING_S = 0.5

demo = Blueprint("demo", __name__, url_prefix="/demo", template_folder="templates")


@dataclass
class DemoState:
    """In-memory state of one app's demo site (gone on restart, as a demo's should be)."""

    log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LOG_LIMIT))
    seq: int = 0
    sessions: set[str] = field(default_factory=set)
    failed_once: set[tuple[str, str]] = field(default_factory=set)
    open_pages: int = 0


def _state() -> DemoState:
    found: DemoState = current_app.extensions["steplog.demo"]
    return found


def _redirect(location: str, status: int = 302) -> Response:
    return Response("", status, headers={"Location": location})


def _logged_in() -> bool:
    return request.cookies.get(SESSION_COOKIE, "") in _state().sessions


@demo.before_request
async def record_request() -> Response | None:
    """Log every demo request (the log itself aside), then apply `delay_ms` and `fail_once`."""
    state = _state()
    if request.path == "/demo/_requests":
        return None
    state.seq += 1
    state.log.append(
        {
            "seq": state.seq,
            "method": request.method,
            "path": request.path,
            "query": request.query_string.decode("utf-8", "replace"),
            "logged_in": _logged_in(),
            "at": datetime.now(UTC).isoformat(),
        }
    )
    delay = request.args.get("delay_ms", type=int) or 0
    if delay:
        await asyncio.sleep(min(max(delay, 0), MAX_DELAY_MS) / 1000)
    key = request.args.get("fail_once")
    if key and (request.path, key) not in state.failed_once:
        state.failed_once.add((request.path, key))
        failure = "<h1>500: the demo fails this page once</h1>"
        return Response(failure, 500, content_type="text/html; charset=utf-8")
    return None


@demo.get("/")
async def index() -> str:
    listed = [p for p in profiles().values() if p.redirect is None]
    return await render_template("demo/index.html", profiles=listed, users=users())


@demo.get("/login")
async def login_form() -> str:
    return await render_template("demo/login.html", next=_safe_next(), error=None)


@demo.post("/login")
async def login() -> Response:
    form = await request.form
    username, password = form.get("username", ""), form.get("password", "")
    known = users()
    if username not in known or not secrets.compare_digest(known[username], password):
        page = await render_template("demo/login.html", next=_safe_next(form), error=True)
        return Response(page, 401, content_type="text/html; charset=utf-8")
    token = secrets.token_urlsafe(24)
    _state().sessions.add(token)
    response = _redirect(_safe_next(form), 303)
    response.set_cookie(SESSION_COOKIE, token, path="/demo", httponly=True, samesite="Lax")
    return response


def _safe_next(form: Any = None) -> str:
    """Only back into the demo: the login is no open redirect."""
    target = (form or {}).get("next") or request.args.get("next") or "/demo/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/demo/"):
        return "/demo/"
    return target


def _profile(slug: str) -> Profile:
    found = profiles().get(slug)
    if found is None:
        raise NotFound(f"no demo profile {slug!r}")
    return found


def _login_wall(profile: Profile) -> Response | None:
    if profile.private and not _logged_in():
        query = urlencode({"next": request.full_path.rstrip("?")})
        return _redirect(f"/demo/login?{query}")
    return None


def _base_url() -> str:
    return f"{request.scheme}://{request.host}"


@demo.get("/in/<slug>")
async def profile_page(slug: str) -> Response | str:
    profile = _profile(slug)
    if profile.redirect:
        return _redirect(profile.redirect)
    if (wall := _login_wall(profile)) is not None:
        return wall
    jobs = profile.experience
    pages_delay = request.args.get("pages_delay_ms", type=int)
    next_page = None
    if len(jobs) > PROFILE_MAX:
        query = {"page": 2, **({"delay_ms": pages_delay} if pages_delay else {})}
        next_page = f"/demo/in/{slug}/experience?{urlencode(query)}"
    return await render_template(
        "demo/profile.html",
        p=profile,
        jsonld=person_jsonld(profile, _base_url()),
        positions=jobs[:PROFILE_INLINE],
        more_offset=PROFILE_INLINE if len(jobs) > PROFILE_INLINE else None,
        next_page=next_page,
        month=month_label,
    )


@demo.get("/in/<slug>/more")
async def more_positions(slug: str) -> Response:
    """The "Show more experience" button's batch, as an HTML fragment in JSON."""
    profile = _profile(slug)
    if profile.private and not _logged_in():
        raise NotFound("log in first")
    offset = request.args.get("offset", type=int)
    if offset is None or not PROFILE_INLINE <= offset < PROFILE_MAX:
        raise BadRequest(f"offset must be between {PROFILE_INLINE} and {PROFILE_MAX - 1}")
    end = min(offset + SEE_MORE_BATCH, PROFILE_MAX, len(profile.experience))
    html = await render_template(
        "demo/_positions.html", positions=profile.experience[offset:end], month=month_label
    )
    following = end if end < min(PROFILE_MAX, len(profile.experience)) else None
    body = dumps({"html": html, "next_offset": following})
    return Response(body, content_type="application/json")


@demo.get("/in/<slug>/education")
async def education(slug: str) -> Response | str:
    profile = _profile(slug)
    if profile.private and not _logged_in():
        raise NotFound("log in first")
    return await render_template(
        "demo/_education.html", schools=profile.raw.get("education") or [], month=month_label
    )


@demo.get("/in/<slug>/experience")
async def experience_page(slug: str) -> Response | str:
    profile = _profile(slug)
    if (wall := _login_wall(profile)) is not None:
        return wall
    page = request.args.get("page", type=int) or 2
    if not 2 <= page <= profile.page_count() + 1:
        raise NotFound(f"{profile.slug} has no experience page {page}")
    next_page = None
    if page <= profile.page_count():
        delay = request.args.get("delay_ms", type=int)
        query = {"page": page + 1, **({"delay_ms": delay} if delay else {})}
        next_page = f"/demo/in/{slug}/experience?{urlencode(query)}"
    return await render_template(
        "demo/experience.html",
        p=profile,
        page=page,
        positions=profile.page_positions(page),
        next_page=next_page,
        month=month_label,
    )


@demo.get("/avatar/<slug>.svg")
async def avatar(slug: str) -> Response:
    _profile(slug)
    letter = slug[:1].upper()
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96">'
        '<rect width="96" height="96" rx="48" fill="#3b6"/>'
        f'<text x="48" y="62" font-size="44" text-anchor="middle" fill="#fff">{letter}</text></svg>'
    )
    return Response(svg, content_type="image/svg+xml")


@demo.get("/traps/redirect")
async def trap_redirect() -> Response:
    """Redirects wherever `to` says: a public-looking page that sends the browser elsewhere."""
    target = request.args.get("to", "")
    if urlsplit(target).scheme not in ("http", "https"):
        raise BadRequest("to must be an http(s) URL")
    return _redirect(target)


@demo.get("/traps/image")
async def trap_image() -> str:
    """A profile-looking page whose image points wherever `src` says."""
    return await render_template("demo/trap_image.html", src=request.args.get("src", ""))


@demo.get("/_requests")
async def request_log() -> Response:
    """Every demo request so far, and how many demo pages are open in a browser now."""
    state = _state()
    body = {"requests": list(state.log), "open_pages": state.open_pages}
    return Response(dumps(body), content_type="application/json")


@demo.get("/_beacon")
async def beacon() -> Response:
    """Held open by every demo page while it lives: `open_pages` counts these."""
    state = _state()

    async def stream() -> AsyncIterator[bytes]:
        state.open_pages += 1
        try:
            yield b"retry: 3600000\n\n"
            while True:
                await asyncio.sleep(BEACON_PING_S)
                yield b": alive\n\n"
        finally:
            state.open_pages -= 1

    response = Response(stream(), content_type="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.timeout = None
    return response
