"""The demo site's data: profiles and users from `profiles.json`, rendered helpers.

The data file holds the hard cases on purpose (a bidi override and zero-width
characters in a name, control characters in a bio, emoji, other scripts), so
the scraper's tests compare its result with this file, not with a copy.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from markupsafe import Markup

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

PROFILE_INLINE = 5
"""Positions shown in the profile page's HTML."""
SEE_MORE_BATCH = 5
"""Positions each "Show more experience" click loads."""
PROFILE_MAX = 10
"""Positions the profile page can show at most; the rest are on pagination pages."""
PAGE_SIZE = 8
"""Positions per pagination page."""


@dataclass(frozen=True, slots=True)
class Profile:
    slug: str
    raw: dict[str, Any]

    @property
    def private(self) -> bool:
        return bool(self.raw.get("private"))

    @property
    def redirect(self) -> str | None:
        target: str | None = self.raw.get("redirect")
        return target

    @property
    def location(self) -> str:
        place = self.raw.get("location") or {}
        parts = (place.get(k) for k in ("locality", "region", "country"))
        return ", ".join(p for p in parts if p)

    @property
    def experience(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = self.raw.get("experience") or []
        return jobs

    def page_count(self) -> int:
        """Pagination pages after the profile (page 2 onwards)."""
        rest = max(0, len(self.experience) - PROFILE_MAX)
        return -(-rest // PAGE_SIZE)

    def page_positions(self, page: int) -> list[dict[str, Any]]:
        start = PROFILE_MAX + (page - 2) * PAGE_SIZE
        return self.experience[start : start + PAGE_SIZE]


@functools.cache
def _data() -> dict[str, Any]:
    text = resources.files("stream.demo").joinpath("profiles.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def profiles() -> dict[str, Profile]:
    return {p["slug"]: Profile(p["slug"], p) for p in _data()["profiles"]}


def users() -> dict[str, str]:
    return {u["username"]: u["password"] for u in _data()["users"]}


def month_label(value: str | None) -> str:
    """`2019-03` → `Mar 2019` (what the page shows; the ISO form is in `datetime`)."""
    if not value:
        return "Present"
    year, month = value.split("-")
    return f"{MONTHS[int(month) - 1]} {year}"


def script_json(value: Any) -> Markup:
    """JSON that is safe inside `<script>`: no `</script>`, no line separators."""
    text = json.dumps(value, ensure_ascii=False, indent=1)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):  # fmt: skip
        text = text.replace(char, escape)
    return Markup(text)


def person_jsonld(profile: Profile, base_url: str) -> Markup:
    """schema.org `ProfilePage` with the `Person` as its main entity."""
    raw = profile.raw
    place = raw.get("location") or {}
    current = next((job for job in profile.experience if not job.get("end")), None)
    person: dict[str, Any] = {
        "@type": "Person",
        "name": raw["name"],
        "jobTitle": raw.get("headline"),
        "address": {
            "@type": "PostalAddress",
            "addressLocality": place.get("locality"),
            "addressRegion": place.get("region"),
            "addressCountry": place.get("country"),
        },
        "description": raw.get("about"),
        "image": f"{base_url}/demo/avatar/{profile.slug}.svg",
        "knowsAbout": raw.get("skills") or [],
        "sameAs": [link["url"] for link in raw.get("links") or []],
        "alumniOf": [
            {"@type": "EducationalOrganization", "name": school["school"]}
            for school in raw.get("education") or []
        ],
    }
    if current is not None:
        person["worksFor"] = {"@type": "Organization", "name": current["company"]}
    page = {"@context": "https://schema.org", "@type": "ProfilePage", "mainEntity": person}
    return script_json(page)
