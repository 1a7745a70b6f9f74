"""Turn a loaded page into profile data: JSON-LD `Person`, OpenGraph, and a recipe.

Two halves. In the browser, `collect()` reads what the recipe's CSS selectors
point at (after the page was expanded) and the page's serialized HTML; the
structured data in that HTML (`<script type="application/ld+json">`, `<meta
property="og:…">`) is parsed here in Python, so it can be tested without a
browser. Then `build_profile()` merges the sources: JSON-LD wins for single
fields (it is what the site states about itself), the recipe's lists win for
experience, education, skills and links (the visible lists are complete once
expanded; JSON-LD rarely carries job history), OpenGraph fills what is left.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

from functions.scrape.jsondepth import too_deep
from functions.scrape.recipe import Recipe
from functions.scrape.render import DEEP_JS
from functions.scrape.result.dates import parse_month, parse_range

if TYPE_CHECKING:
    from playwright.async_api import Page

MAX_JSONLD_BYTES = 512 * 1024
PROFILE_FIELDS = ("name", "headline", "location", "about", "image")

COLLECT_JS = (
    "(spec) => {"
    + DEEP_JS
    + """
  const roots = steplogRoots();
  const text = (el) => {
    if (!el) return null;
    const value = (el.innerText ?? el.textContent ?? "").trim();
    return value === "" ? null : value;
  };
  const pick = (root, selector) => {
    const css = typeof selector === "string" ? selector : selector.selector;
    const attr = typeof selector === "string" ? null : selector.attr;
    const el = !css ? root : root === null ? steplogOne(roots, css) : root.querySelector(css);
    if (!el) return null;
    if (!attr) return text(el);
    const absolute = attr === "href" || attr === "src";
    if (absolute && typeof el[attr] === "string") return el[attr] || null;
    const value = el.getAttribute(attr);
    return value === null || value.trim() === "" ? null : value.trim();
  };
  const fields = {};
  for (const [name, selector] of Object.entries(spec.fields || {})) {
    fields[name] = pick(null, selector);
  }
  const lists = {};
  for (const [name, list] of Object.entries(spec.lists || {})) {
    lists[name] = steplogAll(roots, list.item).map((el) => {
      if (!list.fields) return text(el);
      const item = {};
      for (const [key, selector] of Object.entries(list.fields)) item[key] = pick(el, selector);
      return item;
    });
  }
  const next = spec.next_page ? steplogOne(roots, spec.next_page) : null;
  const jsonld = steplogAll(roots, 'script[type^="application/ld+json" i]')
    .slice(0, 50).map((s) => s.textContent || "");
  return {
    url: location.href,
    title: document.title,
    fields,
    lists,
    next: next && next.href ? next.href : null,
    jsonld,
  };
}
"""
)
"""Reads the recipe's fields and lists from the rendered page, open shadow roots and
same-origin iframes included (`DEEP_JS`), and the text of every JSON-LD block there:
what scripts inserted after load is read too, not only what the first HTML carried."""


class _StructuredData(HTMLParser):
    """Collects JSON-LD script bodies, `<meta>` properties and the title."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.jsonld: list[str] = []
        self.meta: dict[str, str] = {}
        self.title: str | None = None
        self._in: str | None = None
        self._buffer: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k.lower(): v or "" for k, v in attrs}
        if tag == "script" and attributes.get("type", "").lower().startswith("application/ld+json"):
            self._in, self._buffer = "jsonld", []
        elif tag == "title" and self.title is None:
            self._in, self._buffer = "title", []
        elif tag == "meta":
            key = (attributes.get("property") or attributes.get("name") or "").strip().lower()
            if key and "content" in attributes and key not in self.meta:
                self.meta[key] = attributes["content"]

    def handle_data(self, data: str) -> None:
        if self._in is not None:
            self._buffer.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._in == "jsonld" and tag == "script":
            self.jsonld.append("".join(self._buffer))
            self._in = None
        elif self._in == "title" and tag == "title":
            self.title = "".join(self._buffer).strip()
            self._in = None


def structured_data(html: str) -> dict[str, Any]:
    """The JSON-LD objects (those that parse) and `<meta>` values of an HTML document."""
    parser = _StructuredData()
    parser.feed(html)
    parser.close()
    return {"jsonld": parse_jsonld(parser.jsonld), "meta": parser.meta, "title": parser.title}


def parse_jsonld(blocks: list[Any]) -> list[Any]:
    """The JSON-LD blocks that parse; broken, huge or over-deep ones are left out."""
    objects: list[Any] = []
    for block in blocks:
        if not isinstance(block, str) or len(block) > MAX_JSONLD_BYTES or too_deep(block):
            continue  # over-deep structured data is absent, not a reason to fail the step
        try:
            objects.append(json.loads(block))
        except (ValueError, RecursionError):
            continue  # a broken block is the site's problem; the other sources remain
    return objects


def _nodes(value: Any) -> list[dict[str, Any]]:
    """Every object in a JSON-LD value: top-level lists and `@graph`s flattened."""
    found: list[dict[str, Any]] = []
    stack = [value]
    while stack:
        item = stack.pop(0)
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            found.append(item)
            if isinstance(item.get("@graph"), list):
                stack.extend(item["@graph"])
            if isinstance(item.get("mainEntity"), dict):
                stack.append(item["mainEntity"])
    return found


def _is_person(node: dict[str, Any]) -> bool:
    kind = node.get("@type")
    kinds = kind if isinstance(kind, list) else [kind]
    return any(isinstance(k, str) and k.rsplit("/", 1)[-1] == "Person" for k in kinds)


def _text(value: Any) -> str | None:
    """A JSON-LD value as text: strings as is, `{name}`, `{url}` or `{@value}` unwrapped."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and value:
        return _text(value[0])
    if isinstance(value, dict):
        for key in ("name", "url", "@value", "contentUrl"):
            if isinstance(value.get(key), str):
                return str(value[key])
    return None


def _texts(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [t for t in (_text(item) for item in items) if t]


def _place(value: Any) -> str | None:
    if isinstance(value, dict) and any(
        k in value for k in ("addressLocality", "addressRegion", "addressCountry")
    ):
        parts = [
            _text(value.get(k)) for k in ("addressLocality", "addressRegion", "addressCountry")
        ]
        return ", ".join(p for p in parts if p) or None
    if isinstance(value, dict) and isinstance(value.get("address"), dict | str):
        return _place(value["address"])
    return _text(value)


def person_from_jsonld(objects: list[Any]) -> dict[str, Any] | None:
    """The first schema.org `Person`, mapped onto the profile's fields."""
    for node in _nodes(objects):
        if not _is_person(node):
            continue
        works = node.get("worksFor")
        experience = []
        if works:
            for company in works if isinstance(works, list) else [works]:
                name = _text(company)
                if name:
                    title = _text(node.get("jobTitle"))
                    experience.append(
                        {"title": title, "company": name, "start": None, "end": None, "dates": None}
                    )
        return {
            "name": _text(node.get("name"))
            or " ".join(
                t for t in (_text(node.get("givenName")), _text(node.get("familyName"))) if t
            )
            or None,
            "headline": _text(node.get("jobTitle")) or _text(node.get("disambiguatingDescription")),
            "location": _place(node.get("address")) or _place(node.get("homeLocation")),
            "about": _text(node.get("description")),
            "image": _text(node.get("image")),
            "skills": _texts(node.get("knowsAbout")),
            "links": [{"label": None, "url": url} for url in _texts(node.get("sameAs"))],
            "education": [
                {"school": school, "degree": None, "start": None, "end": None}
                for school in _texts(node.get("alumniOf"))
            ],
            "experience": experience,
        }
    return None


def opengraph(meta: dict[str, str]) -> dict[str, Any]:
    """What OpenGraph (and plain `<meta name=description>`) says about the page."""
    return {
        "name": meta.get("og:title"),
        "headline": meta.get("og:description") or meta.get("description"),
        "image": meta.get("og:image"),
        "url": meta.get("og:url"),
    }


async def collect(page: Page, recipe: Recipe) -> dict[str, Any]:
    """What the recipe's selectors find on the page now, plus its structured data."""
    found: dict[str, Any] = await page.evaluate(COLLECT_JS, recipe.collector_spec())
    data = structured_data(await page.content())
    found["jsonld"] = parse_jsonld(found.get("jsonld") or [])
    found["meta"] = {
        k: v
        for k, v in data["meta"].items()
        if k.startswith(("og:", "profile:")) or k == "description"
    }
    return found


def _job(item: dict[str, Any]) -> dict[str, Any]:
    start = parse_month(item.get("start"))
    end = parse_month(item.get("end"))
    if start is None and item.get("dates"):
        start, end = parse_range(item["dates"])
    return {
        "title": item.get("title"),
        "company": item.get("company"),
        "start": start,
        "end": end,
        "dates": item.get("dates"),
    }


def _school(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "school": item.get("school"),
        "degree": item.get("degree"),
        "start": parse_month(item.get("start")),
        "end": parse_month(item.get("end")),
    }


def _link(item: Any) -> dict[str, Any] | None:
    if isinstance(item, str):
        return {"label": None, "url": item}
    if isinstance(item, dict) and item.get("url"):
        return {"label": item.get("label"), "url": item["url"]}
    return None


def build_profile(
    main: dict[str, Any], pages: list[dict[str, Any]], recipe: Recipe
) -> tuple[dict[str, Any], list[str]]:
    """Merge the main page's capture and the pagination pages' lists into one profile.

    Returns the (not yet sanitized) profile and the sources that contributed.
    """
    person = person_from_jsonld(main.get("jsonld") or []) or {}
    graph = opengraph(main.get("meta") or {})
    fields = main.get("fields") or {}
    sources: list[str] = []
    profile: dict[str, Any] = {}
    for name in PROFILE_FIELDS:
        candidates = (
            ("json-ld", person.get(name)),
            (f"recipe:{recipe.name}", fields.get(name)),
            ("opengraph", graph.get(name)),
        )
        for source, value in candidates:
            if isinstance(value, str) and value.strip():
                profile[name] = value
                if source not in sources:
                    sources.append(source)
                break
        else:
            profile[name] = None
    lists: dict[str, list[Any]] = {
        name: list((main.get("lists") or {}).get(name) or []) for name in recipe.lists
    }
    for page in pages:
        for name, items in (page.get("lists") or {}).items():
            lists.setdefault(name, []).extend(items or [])
    shape = {"experience": _job, "education": _school}
    for name in ("experience", "education", "skills", "links"):
        items = [i for i in lists.get(name) or [] if i]
        if items:
            if f"recipe:{recipe.name}" not in sources:
                sources.append(f"recipe:{recipe.name}")
        else:
            items = person.get(name) or []
            if items and "json-ld" not in sources:
                sources.append("json-ld")
        if name in shape:
            profile[name] = [shape[name](i) for i in items if isinstance(i, dict)]
        elif name == "links":
            profile[name] = [link for link in (_link(i) for i in items) if link]
        else:
            profile[name] = [i for i in items if isinstance(i, str)]
    return profile, sources
