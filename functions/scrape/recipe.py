"""CSS-selector recipes: how to read a site, kept as data files beside this module.

A recipe says which URLs it is for, how to log in, what to expand (scroll,
"see more" buttons, lazy sections, pagination) and where each profile field is.
Adding a site means adding a JSON file to `recipes/`, not code. `generic.json`
matches every URL and is tried last.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

Selector = str | dict[str, str]
"""A CSS selector (the element's text), or `{"selector": …, "attr": …}` for an attribute."""


@dataclass(frozen=True, slots=True)
class Login:
    url: str
    username: str
    password: str
    submit: str
    wall: str
    """A selector present only on the login page: finding it means "not logged in"."""
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Expand:
    scroll: bool = True
    see_more: tuple[str, ...] = ()
    lazy: tuple[tuple[str, str], ...] = ()
    """Lazily loaded sections: (selector of the section, selector once it has arrived)."""
    next_page: str | None = None
    max_clicks: int = 30
    ready: tuple[str, ...] = ()
    """Selectors that show the profile has rendered (default: the name's and the lists' items)."""


@dataclass(frozen=True, slots=True)
class Recipe:
    name: str
    path_regex: str
    priority: int
    fields: dict[str, Selector]
    lists: dict[str, dict[str, Any]]
    expand: Expand = field(default_factory=Expand)
    login: Login | None = None

    def matches(self, url: str) -> bool:
        return re.search(self.path_regex, urlsplit(url).path or "/") is not None

    def collector_spec(self) -> dict[str, Any]:
        """What the in-page collector needs (plain JSON, passed to `page.evaluate`)."""
        return {"fields": self.fields, "lists": self.lists, "next_page": self.expand.next_page}


def _recipe(data: dict[str, Any]) -> Recipe:
    expand = data.get("expand") or {}
    login = data.get("login")
    return Recipe(
        name=data["name"],
        path_regex=data["match"]["path_regex"],
        priority=int(data.get("priority", 0)),
        fields=dict(data.get("fields") or {}),
        lists=dict(data.get("lists") or {}),
        expand=Expand(
            scroll=bool(expand.get("scroll", True)),
            see_more=tuple(expand.get("see_more") or ()),
            lazy=tuple((item["section"], item["ready"]) for item in expand.get("lazy") or ()),
            next_page=expand.get("next_page"),
            max_clicks=int(expand.get("max_clicks", 30)),
            ready=tuple(expand.get("ready") or ()),
        ),
        login=Login(**login) if login else None,
    )


@functools.cache
def recipes() -> dict[str, Recipe]:
    """Every recipe shipped in `recipes/`, by name."""
    found: dict[str, Recipe] = {}
    folder = resources.files("functions.scrape").joinpath("recipes")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            recipe = _recipe(json.loads(entry.read_text(encoding="utf-8")))
            found[recipe.name] = recipe
    return found


def choose(url: str, name: str | None = None) -> Recipe:
    """The named recipe, else the highest-priority one whose path pattern matches `url`."""
    available = recipes()
    if name is not None:
        return available[name]
    matching = [r for r in available.values() if r.matches(url)]
    return max(matching, key=lambda r: r.priority)
