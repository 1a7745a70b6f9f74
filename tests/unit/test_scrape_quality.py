"""The scraper's pure parts added for pages as they are: over-deep structured data,
the demo allow-list's path prefix, list de-duplication and batch params.

No browser here (tests/e2e/test_scrape_rendered.py and test_scrape_batch.py drive
real Chromium)."""

from __future__ import annotations

import json

from functions.scrape.extract import build_profile, structured_data
from functions.scrape.jsondepth import MAX_JSONLD_DEPTH, too_deep
from functions.scrape.recipe import choose

PERSON = {"@context": "https://schema.org", "@type": "Person", "name": "Ada Lovelace"}


def _page(*blocks: str) -> str:
    scripts = "".join(f'<script type="application/ld+json">{b}</script>' for b in blocks)
    return f"<html><head>{scripts}</head><body><h1>Ada</h1></body></html>"


def test_deeply_nested_json_ld_is_treated_as_absent_not_a_crash() -> None:
    hostile = "[" * 100_000 + "]" * 100_000
    nested_name = json.dumps({"@type": "Person", "name": json.loads("[" * 900 + '"x"' + "]" * 900)})
    data = structured_data(_page(hostile, nested_name, json.dumps(PERSON)))
    assert data["jsonld"] == [PERSON]  # the two deep blocks are gone, the good one stays
    profile, sources = build_profile(
        {"jsonld": data["jsonld"], "fields": {}, "lists": {}}, [], choose("https://x.example/")
    )
    assert profile["name"] == "Ada Lovelace" and sources == ["json-ld"]


def test_the_depth_scan_counts_brackets_outside_strings_only() -> None:
    deep = "[" * (MAX_JSONLD_DEPTH + 1) + "]" * (MAX_JSONLD_DEPTH + 1)
    assert too_deep(deep)
    assert not too_deep("[" * MAX_JSONLD_DEPTH + "]" * MAX_JSONLD_DEPTH)
    assert not too_deep(json.dumps({"text": "[" * 1000 + '\\"' + "{" * 1000}))
    assert not too_deep(json.dumps([["[" * 50]] * 100))
