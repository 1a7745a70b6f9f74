"""Each list item once: the profile card shows `Python` once, not `Python` and `python`.

Profiles repeat themselves: a skill listed in two spellings (`JS` and `JavaScript`,
`k8s` and `Kubernetes`, `Python` and `python `), a position shown by the page and
again by its "see more" batch, a link listed twice. Skills merge the way the
analysis merges them (`analyze.normalise_skill`: aliases resolved, case and
spacing ignored) and are shown under the analysis's spelling; positions,
schools and links merge when they are equal field for field (links by URL).
The first occurrence keeps its place.

Nothing is lost: every list that merging changed is returned as it was, and the
scrape result keeps it under `raw` (`raw.skills` holds the original spellings).
"""

from __future__ import annotations

from typing import Any

from functions.scrape.result.analyze import normalise_skill

LISTS = ("experience", "education", "skills", "links")


def _key(name: str, item: Any) -> Any:
    if name == "skills" and isinstance(item, str):
        return normalise_skill(item).casefold()
    if name == "links" and isinstance(item, dict):
        return str(item.get("url") or "").rstrip("/")
    if isinstance(item, dict):
        return tuple(sorted((k, str(v)) for k, v in item.items() if not k.endswith("_ascii")))
    return str(item)


def dedupe(profile: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The profile with each list item once, and the lists as they were before (changed only)."""
    merged = dict(profile)
    raw: dict[str, list[Any]] = {}
    for name in LISTS:
        items = profile.get(name)
        if not isinstance(items, list):
            continue
        seen: set[Any] = set()
        kept: list[Any] = []
        for item in items:
            key = _key(name, item)
            if key in seen:
                continue
            seen.add(key)
            if name == "skills" and isinstance(item, str):
                item = normalise_skill(item)
            kept.append(item)
        if kept != items:
            merged[name] = kept
            raw[name] = items
    return merged, raw


def merged_count(raw: dict[str, list[Any]], profile: dict[str, Any]) -> int:
    """How many list items merging folded into another one."""
    return sum(len(items) - len(profile.get(name) or []) for name, items in raw.items())
