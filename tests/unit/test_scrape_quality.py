"""The scraper's pure parts added for pages as they are: over-deep structured data,
the demo allow-list's path prefix, list de-duplication and batch params.

No browser here (tests/e2e/test_scrape_rendered.py and test_scrape_batch.py drive
real Chromium)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from functions.scrape.egress import targets
from functions.scrape.egress.proxy import EgressProxy
from functions.scrape.egress.targets import Guard, TargetRefused, allow_host, check_url, parse_entry
from functions.scrape.extract import build_profile, structured_data
from functions.scrape.jsondepth import MAX_JSONLD_DEPTH, too_deep
from functions.scrape.recipe import choose
from tests.unit.test_scrape_units import socks_connect

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


# --- the demo allow-list: one path prefix, not the whole host:port -----------------------------


@pytest.fixture
def clean_allow_list(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(targets.ALLOW_ENV, raising=False)
    saved = set(targets._allowed)
    yield
    targets._allowed.clear()
    targets._allowed.update(saved)


@pytest.mark.usefixtures("clean_allow_list")
async def test_a_path_prefix_entry_allows_that_prefix_and_nothing_else_on_the_host() -> None:
    assert parse_entry("127.0.0.1:8000/demo/") == targets.HostEntry("127.0.0.1", 8000, "/demo")
    assert parse_entry("[::1]:80/demo") == targets.HostEntry("::1", 80, "/demo")
    allow_host("127.0.0.1:8000/demo")
    assert await check_url("http://127.0.0.1:8000/demo/in/ada")
    assert await check_url("http://127.0.0.1:8000/demo")
    for path in ("/metrics", "/demox", "/runs", "/demo/%2e%2e/metrics", "/demo/../metrics"):
        with pytest.raises(TargetRefused, match=r"only /demo/ may be fetched on 127\.0\.0\.1:8000"):
            await check_url(f"http://127.0.0.1:8000{path}")
    guard = Guard()
    assert await guard.check_request_url("http://127.0.0.1:8000/demo/api/x", "a fetch") is None
    refused = await guard.check_request_url("http://127.0.0.1:8000/metrics", "a fetch")
    assert refused is not None and "only /demo/" in refused.reason
    allow_host("127.0.0.1:8000")  # a whole-host entry beside it opens every path again
    assert await check_url("http://127.0.0.1:8000/metrics")


@pytest.mark.usefixtures("clean_allow_list")
async def test_the_proxy_checks_every_request_on_a_prefix_only_host() -> None:
    """A redirect hop reaches only the proxy: it reads each request head before forwarding."""
    received: list[bytes] = []

    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            received.append(head.split(b"\r\n", 1)[0])
            if b"Content-Length: 4" in head:
                received.append(await reader.readexactly(4))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    allow_host(f"127.0.0.1:{port}/demo")
    guard = Guard()
    proxy = await EgressProxy(guard).start()
    try:
        code, reader, writer = await socks_connect(proxy, "127.0.0.1", port)
        assert code == 0
        writer.write(b"GET /demo/in/ada HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
        writer.write(b"POST /demo/login HTTP/1.1\r\nContent-Length: 4\r\n\r\nab=c")
        assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
        # The same keep-alive connection, now asking for /metrics: never forwarded.
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 403 Forbidden")
        writer.close()
        assert received == [b"GET /demo/in/ada HTTP/1.1", b"POST /demo/login HTTP/1.1", b"ab=c"]
        assert [str(r) for r in guard.refusals] == [
            f"refused to fetch http://127.0.0.1:{port}/metrics (a request on an allowed host):"
            f" only /demo/ may be fetched on 127.0.0.1:{port}"
        ]

        code, reader, writer = await socks_connect(proxy, "127.0.0.1", port)
        writer.write(b"\x16\x03\x01\x00\x05hello")  # TLS: the path cannot be seen
        assert (await reader.read()).startswith(b"HTTP/1.1 403")
        writer.close()
        assert len(received) == 3
    finally:
        await proxy.close()
        server.close()
        await server.wait_closed()


# --- each list item once ------------------------------------------------------------------------


def test_repeated_list_items_merge_the_way_the_analysis_merges_skills() -> None:
    from functions.scrape.result.dedupe import dedupe, merged_count

    job = {"title": "Engineer", "company": "Acme", "start": "2020-01", "end": None}
    profile = {
        "name": "Zoë",
        "skills": ["Python", "python ", "JS", "JavaScript", "k8s", "Kubernetes", "Rust", "golang"],
        "experience": [job, dict(job), {**job, "title": "Lead"}],
        "education": [],
        "links": [{"label": "GitHub", "url": "https://x.example/z"},
                  {"label": "Code", "url": "https://x.example/z/"}],
    }  # fmt: skip
    merged, raw = dedupe(profile)
    assert merged["skills"] == ["Python", "JavaScript", "Kubernetes", "Rust", "Go"]
    assert merged["experience"] == [job, {**job, "title": "Lead"}]
    assert merged["links"] == [{"label": "GitHub", "url": "https://x.example/z"}]
    assert raw == {
        "skills": profile["skills"],
        "experience": profile["experience"],
        "links": profile["links"],
    }
    assert merged_count(raw, merged) == 3 + 1 + 1
    assert dedupe(merged) == (merged, {})  # merging twice changes nothing
