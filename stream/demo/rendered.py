"""The demo site's pages that draw themselves, as most profile sites do today.

* `/demo/app/<slug>`: a client-rendered profile. The HTML is an empty shell with a
  spinner; after `load` its script fetches `/demo/api/profiles/<slug>` (slowed by
  `?api_delay_ms=`, 300 ms by default), draws the profile in schema.org microdata
  and only then inserts its JSON-LD. Read with the `generic` recipe.
* `/demo/shadow/<slug>`: the same profile inside an open shadow root of a custom
  element, its education in a same-origin iframe (`/demo/frame/<slug>/education`).
* `/demo/scroll/<slug>`: an endless experience list: five positions, then five more
  each time the end of the list scrolls into view (`?batch_delay_ms=` slows each
  batch), until there are no more.
* `/demo/traps/fetch?src=`: a page whose script fetches `src` before it draws the
  profile: the scraper's target guard must see that fetch too.

Private profiles are served to logged-in visitors only, as on the server-rendered pages.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from quart import Response, render_template, request
from werkzeug.exceptions import BadRequest, NotFound

from storage.jsonenc import dumps
from stream.demo.content import Profile, person_jsonld
from stream.demo.site import _base_url, _logged_in, _login_wall, _profile, demo

API_DELAY_MS = 300
"""How late the client-rendered profile arrives by default: well after the `load` event."""
SCROLL_BATCH = 5


def _visible(slug: str) -> Profile:
    profile = _profile(slug)
    if profile.redirect or (profile.private and not _logged_in()):
        raise NotFound(f"no demo profile {slug!r} for you")
    return profile


def _delay(name: str, default: int = 0) -> str:
    """`&delay_ms=N` for the page's own fetches (the site's `delay_ms` hook), or ""."""
    value = request.args.get(name, type=int)
    value = default if value is None else value
    return f"?{urlencode({'delay_ms': value})}" if value > 0 else ""


@demo.get("/api/profiles/<slug>")
async def profile_api(slug: str) -> Response:
    """The profile as the client-rendered pages fetch it."""
    profile = _visible(slug)
    body: dict[str, Any] = {
        "profile": profile.raw,
        "location": profile.location,
        "image": f"{_base_url()}/demo/avatar/{profile.slug}.svg",
        "jsonld": json.loads(str(person_jsonld(profile, _base_url()))),
    }
    return Response(dumps(body), content_type="application/json")


@demo.get("/api/profiles/<slug>/experience")
async def experience_api(slug: str) -> Response:
    """One batch of the endless list: `items`, and the `next_offset` (null at the end)."""
    profile = _visible(slug)
    offset = request.args.get("offset", type=int)
    jobs = profile.experience
    if offset is None or not 0 <= offset <= len(jobs):
        raise BadRequest(f"offset must be between 0 and {len(jobs)}")
    end = min(offset + SCROLL_BATCH, len(jobs))
    body = {"items": jobs[offset:end], "next_offset": end if end < len(jobs) else None}
    return Response(dumps(body), content_type="application/json")


@demo.get("/app/<slug>")
async def app_page(slug: str) -> Response | str:
    profile = _profile(slug)
    if (wall := _login_wall(profile)) is not None:
        return wall
    api_url = f"/demo/api/profiles/{profile.slug}{_delay('api_delay_ms', API_DELAY_MS)}"
    return await render_template("demo/app.html", api_url=api_url)


@demo.get("/shadow/<slug>")
async def shadow_page(slug: str) -> Response | str:
    profile = _profile(slug)
    if (wall := _login_wall(profile)) is not None:
        return wall
    api_url = f"/demo/api/profiles/{profile.slug}{_delay('api_delay_ms', API_DELAY_MS)}"
    return await render_template("demo/shadow.html", api_url=api_url, slug=profile.slug)


@demo.get("/frame/<slug>/education")
async def education_frame(slug: str) -> str:
    profile = _visible(slug)
    schools = profile.raw.get("education") or []
    return await render_template("demo/frame_education.html", schools=schools)


@demo.get("/scroll/<slug>")
async def scroll_page(slug: str) -> Response | str:
    profile = _profile(slug)
    if (wall := _login_wall(profile)) is not None:
        return wall
    delay = request.args.get("batch_delay_ms", type=int) or 0
    query = urlencode({"delay_ms": delay}) + "&" if delay > 0 else ""
    return await render_template(
        "demo/scroll.html",
        api_url=f"/demo/api/profiles/{profile.slug}",
        batch_url=f"/demo/api/profiles/{profile.slug}/experience?{query}",
        batch=SCROLL_BATCH,
    )


@demo.get("/traps/fetch")
async def trap_fetch() -> str:
    return await render_template("demo/trap_fetch.html", src=request.args.get("src", ""))
