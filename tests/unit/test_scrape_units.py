"""The scraper's pure parts: cleaning text, analysing, target policy, extraction from HTML.

No browser here (tests/e2e/test_scrape.py drives real Chromium); the
egress proxy is exercised over real loopback sockets.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import struct
import unicodedata
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from functions.errors import PermanentError, TransientError, is_transient
from functions.scrape import browser
from functions.scrape.egress import targets
from functions.scrape.egress.proxy import EgressProxy
from functions.scrape.egress.targets import (
    Guard,
    TargetRefused,
    allow_host,
    check_url,
    parse_entry,
    refusal_reason,
)
from functions.scrape.extract import build_profile, person_from_jsonld, structured_data
from functions.scrape.pages import status_error
from functions.scrape.params import (
    CREDENTIALS_ENV,
    MASK,
    REVEAL_SECRETS,
    ScrapeParams,
    credentials_for,
)
from functions.scrape.recipe import choose, recipes
from functions.scrape.result.analyze import (
    analyze,
    count_skills,
    experience_months,
    keywords,
    load_analyzer,
    run_analyzer,
    seniority,
)
from functions.scrape.result.dates import parse_month, parse_range
from functions.scrape.result.sanitize import clean_text, sanitize, to_ascii

# --- sanitize ---------------------------------------------------------------------------------

SPOOFED_NAME = "Zoe\u0308\u200b Ar\u202enaud\u202c\u2060"


def test_a_spoofed_name_loses_its_invisible_characters_and_is_composed() -> None:
    cleaned = clean_text(SPOOFED_NAME)
    assert cleaned == "Zoë Arnaud"
    assert cleaned == unicodedata.normalize("NFC", cleaned)
    assert len(cleaned) == 10  # ë is one code point, not e + U+0308


def test_control_characters_go_and_paragraphs_stay() -> None:
    bio = "robots\x07 that sort\r\nmail;\x1b before\x08 that\x7f.\n\n\n\nSecond\u2028line\u200f"
    assert clean_text(bio, multiline=True) == "robots that sort\nmail; before that.\n\nSecond\nline"
    assert clean_text(bio) == "robots that sort mail; before that. Second line"


def test_real_text_is_kept_as_utf8() -> None:
    for text in ("李伟", "Дмитрий Иванов", "Montréal", "Robotics lead 🤖", "مرحبا"):
        assert clean_text(text) == text


def test_emoji_sequences_keep_their_joiners_but_letters_do_not() -> None:
    assert clean_text("builds teams 👩\u200d💻") == "builds teams 👩\u200d💻"
    assert clean_text("ad\u200dmin") == "admin"
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # Persian: ZWNJ is spelling
    assert clean_text(persian) == persian
    assert clean_text("pay\u200cpal") == "paypal"


def test_spaces_are_normalised_and_zalgo_is_trimmed() -> None:
    assert clean_text("a\u00a0b\u3000c\u2009d") == "a b c d"
    assert clean_text("ok\u3164\u115f") == "ok"  # Hangul fillers render as nothing
    zalgo = "Z" + "\u0301" * 20
    assert clean_text(zalgo) == "\u0179" + "\u0301" * 4  # Ź, then at most four marks
    assert clean_text("x\ud800y") == "xy"  # a lone surrogate cannot be UTF-8


def test_ascii_transliterations_sit_beside_name_like_fields() -> None:
    profile = {
        "name": SPOOFED_NAME,
        "headline": "lead 🤖",
        "location": "Montréal, Québec",
        "about": "line one\n\nline\x07 two",
        "experience": [{"title": "Engineer", "company": "Яндекс"}],
        "education": [{"school": "École Polytechnique", "degree": None}],
        "image": None,
    }
    assert sanitize(profile) == {
        "name": "Zoë Arnaud",
        "name_ascii": "Zoe Arnaud",
        "headline": "lead 🤖",
        "location": "Montréal, Québec",
        "location_ascii": "Montreal, Quebec",
        "about": "line one\n\nline two",
        "experience": [{"title": "Engineer", "company": "Яндекс", "company_ascii": "Iandeks"}],
        "education": [
            {"school": "École Polytechnique", "school_ascii": "Ecole Polytechnique", "degree": None}
        ],
        "image": None,
    }
    assert to_ascii("李伟") == "Li Wei"
    assert to_ascii("Дмитрий Иванов") == "Dmitrii Ivanov"


@given(st.text())
def test_cleaning_leaves_nothing_invisible_and_is_stable(text: str) -> None:
    for multiline in (False, True):
        cleaned = clean_text(text, multiline=multiline)
        assert clean_text(cleaned, multiline=multiline) == cleaned
        assert unicodedata.is_normalized("NFC", cleaned)
        cleaned.encode("utf-8")
        for char in cleaned:
            category = unicodedata.category(char)
            assert category not in ("Cc", "Cs", "Co") or char == "\n", repr(char)
            assert category != "Cf" or char in "\u200c\u200d", repr(char)


# --- dates and analysis ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "month"),
    [
        ("2019-03", "2019-03"),
        ("2019-03-17", "2019-03"),
        ("2019", "2019-01"),
        ("Mar 2019", "2019-03"),
        ("March 2019", "2019-03"),
        ("sept. 2019", "2019-09"),
        ("Present", None),
        ("", None),
        ("2019-13", None),
        ("someday", None),
    ],
)
def test_months_are_read_as_profiles_write_them(text: str, month: str | None) -> None:
    assert parse_month(text) == month


def test_date_ranges() -> None:
    assert parse_range("Mar 2019 \u2013 Present") == ("2019-03", None)
    assert parse_range("Jan 2016 - Aug 2018") == ("2016-01", "2018-08")
    assert parse_range(None) == (None, None)


def job(start: str | None, end: str | None, title: str = "Engineer") -> dict[str, str | None]:
    return {"title": title, "company": "Acme", "start": start, "end": end}


def test_experience_counts_overlapping_jobs_once_and_open_jobs_until_as_of() -> None:
    profile = {
        "experience": [
            job("2020-01", "2020-12"),  # 12 months
            job("2020-07", "2021-06"),  # overlaps: 6 more
            job("2023-01", None),  # open: Jan 2023 .. Dec 2023 with as_of in Dec
            job(None, "2010-01"),  # no start: ignored
        ]
    }
    assert experience_months(profile, date(2023, 12, 5)) == 12 + 6 + 12


def test_seniority_follows_years_and_leadership_titles() -> None:
    assert seniority(0.5, {})["level"] == "entry"
    assert seniority(2, {})["level"] == "junior"
    assert seniority(4, {})["level"] == "mid"
    assert seniority(7, {})["level"] == "senior"
    assert seniority(12, {})["level"] == "principal"
    lead = {"experience": [job("2019-01", None, "Engineering lead")]}
    assert seniority(4, lead)["level"] == "senior"
    assert seniority(2, lead)["level"] == "junior"  # a title alone does not make a senior
    assert "lead" in " ".join(seniority(4, lead)["signals"])


def test_skills_are_normalised_and_counted() -> None:
    profile = {
        "skills": ["Python", "python ", "JS", "JavaScript", "k8s", "Rust"],
        "about": "I write Python and Rust; some JavaScript.",
        "experience": [{"title": "Python developer", "company": "Kubernetes Inc"}],
    }
    assert count_skills(profile) == [
        {"name": "Python", "count": 4},  # listed twice, about once, a title once
        {"name": "JavaScript", "count": 3},
        {"name": "Kubernetes", "count": 2},
        {"name": "Rust", "count": 2},
    ]


def test_keywords_skip_stopwords_and_rank_by_count_then_order() -> None:
    text = "Robots sort mail. Robots are fun; the mail is late. Zebras."
    assert keywords(text, top=3) == [
        {"word": "robots", "count": 2},
        {"word": "mail", "count": 2},
        {"word": "sort", "count": 1},
    ]


def test_the_default_analysis_is_deterministic() -> None:
    profile = {
        "skills": ["Go"],
        "about": "Go go go",
        "experience": [job("2015-01", "2020-12", "Staff engineer")],
    }
    first = analyze(profile, date(2026, 1, 1))
    assert first == analyze(json.loads(json.dumps(profile)), date(2026, 1, 1))
    assert first["experience_years"] == 6.0
    assert first["seniority"]["level"] == "principal"  # senior by years, one up for "Staff"
    assert first["as_of"] == "2026-01-01"


async def test_analyzers_are_plugged_in_by_name() -> None:
    result = await run_analyzer("functions.scrape.result.analyze:analyze", {}, date(2026, 1, 1))
    assert result["experience_years"] == 0
    for spec in ("no-colon", "no.such.module:fn", "functions.scrape.result.analyze:missing"):
        with pytest.raises(PermanentError, match="STEPLOG_SCRAPE_ANALYZER"):
            load_analyzer(spec)
    with pytest.raises(PermanentError, match="not a dict"):
        await run_analyzer("operator:is_", {}, date(2026, 1, 1))


# --- the target policy --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.1.2.3", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "unique-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "not a public"),
        ("64:ff9b::7f00:1", "loopback"),
        ("2002:7f00:1::", "loopback"),
        ("::7f00:1", "loopback"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo, client 127.0.0.1
    ],
)
def test_addresses_that_are_refused(address: str, reason: str) -> None:
    found = refusal_reason(ipaddress.ip_address(address))
    assert found is not None and reason in found, found


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://0x7f.1/", "loopback"),
        ("http://0177.0.0.1:8080/", "loopback"),
        ("http://localhost/", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://10.0.0.1/", "private"),
        ("file:///etc/passwd", "only http and https"),
        ("data:text/html,x", "only http and https"),
        ("ftp://example.org/", "only http and https"),
        ("http://user:secret@example.org/", "credentials inside the URL"),
        ("http:///nohost", "no host"),
        ("http://example.org:99999/", "not a valid URL"),
    ],
)
async def test_urls_that_are_refused(url: str, reason: str) -> None:
    with pytest.raises(TargetRefused, match=reason) as refused:
        await check_url(url)
    assert not is_transient(refused.value)


@pytest.fixture
def clean_allow_list(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(targets.ALLOW_ENV, raising=False)
    saved = set(targets._allowed)
    yield
    targets._allowed.clear()
    targets._allowed.update(saved)


@pytest.mark.usefixtures("clean_allow_list")
async def test_the_allow_list_takes_host_or_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(targets.ALLOW_ENV, "127.0.0.1:8000, localhost ,not a port:x")
    assert await check_url("http://127.0.0.1:8000/demo/in/ada")
    assert await check_url("http://0x7f.1:8000/")  # the same host, written oddly
    assert await check_url("http://localhost:1234/")  # a bare host allows every port
    with pytest.raises(TargetRefused, match="loopback"):
        await check_url("http://127.0.0.1:8001/")
    monkeypatch.delenv(targets.ALLOW_ENV)
    allow_host("[::1]:9000")
    assert await check_url("http://[::1]:9000/")
    with pytest.raises(TargetRefused):
        await check_url("http://[::1]:9001/")
    assert parse_entry("[::1]:80") == targets.HostEntry("::1", 80)
    assert parse_entry("Example.ORG.") == targets.HostEntry("example.org", None)


async def test_unresolvable_hosts_are_transient() -> None:
    with pytest.raises(TransientError, match="could not resolve"):
        await check_url("http://no-such-host.invalid/")


async def test_a_guard_records_each_refusal_once() -> None:
    guard = Guard()
    for _ in range(3):  # the browser retries a refused connection
        with pytest.raises(TargetRefused):
            await guard.connect_addresses("10.0.0.1", 80, "a redirect")
    assert len(guard.refusals) == 1
    assert "10.0.0.1:80 (a redirect): 10.0.0.1 is a private address" in str(guard.refusals[0])
    with pytest.raises(TargetRefused, match="private"):
        guard.raise_if_refused()


# --- the egress proxy, over real sockets --------------------------------------------------------


Socks = tuple[int, asyncio.StreamReader, asyncio.StreamWriter]


async def socks_connect(proxy: EgressProxy, host: str, port: int) -> Socks:
    """A SOCKS5 CONNECT by domain name, as Chromium sends it; returns the reply code."""
    proxy_port = int(proxy.server_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    writer.write(b"\x05\x01\x00")
    assert await reader.readexactly(2) == b"\x05\x00"
    name = host.encode()
    writer.write(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", port))
    reply = await reader.readexactly(10)
    return reply[1], reader, writer


@pytest.mark.usefixtures("clean_allow_list")
async def test_the_proxy_refuses_without_connecting_and_pipes_what_is_allowed() -> None:
    accepted: list[str] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append("connection")
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    guard = Guard()
    proxy = await EgressProxy(guard).start()
    try:
        for host in ("127.0.0.1", "2130706433", "::ffff:127.0.0.1", "localhost"):
            code, _reader, writer = await socks_connect(proxy, host, port)
            writer.close()
            assert code == 2, host  # "connection not allowed by ruleset"
        assert accepted == []
        assert {r.reason.split(" (")[0] for r in guard.refusals} >= {
            "127.0.0.1 is a loopback address"
        }

        allow_host(f"127.0.0.1:{port}")
        await proxy.close()  # a guard keeps its verdicts for its run: start a new one
        proxy = await EgressProxy(Guard()).start()
        code, reader, writer = await socks_connect(proxy, "127.0.0.1", port)
        assert code == 0
        writer.write(b"hello")
        assert await reader.readexactly(5) == b"hello"
        writer.close()
        assert accepted == ["connection"]
    finally:
        await proxy.close()
        server.close()
        await server.wait_closed()


# --- params and credentials ---------------------------------------------------------------------


def scrape_params(**values: object) -> ScrapeParams:
    return ScrapeParams.model_validate({"url": "http://example.org/in/ada", **values})


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "data:text/html,x",
        "javascript:alert(1)",
        "http://u:p@x.org/",
        "http://a b/",
    ],
)
def test_params_refuse_urls_that_are_not_plain_http(url: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ScrapeParams.model_validate({"url": url})
    assert refused.value.errors()[0]["loc"] == ("url",)


def test_credentials_are_masked_except_for_storage() -> None:
    params = scrape_params(credentials={"username": "zoe", "password": "hunter2-secret"})
    shown = params.model_dump(mode="json")
    assert shown["credentials"] == {"username": MASK, "password": MASK}
    assert "hunter2" not in repr(params) and "hunter2" not in json.dumps(shown)
    stored = params.model_dump(mode="json", context=REVEAL_SECRETS)
    assert stored["credentials"] == {"username": "zoe", "password": "hunter2-secret"}
    again = ScrapeParams.model_validate(stored)
    assert again.credentials is not None
    assert again.credentials.password.get_secret_value() == "hunter2-secret"


def test_invalid_credentials_do_not_echo_the_secret() -> None:
    with pytest.raises(ValidationError) as refused:
        scrape_params(credentials={"username": "zoe", "password": "hunter2-secret", "x": 1})
    assert "hunter2" not in str(refused.value)


def test_credentials_come_from_params_then_the_environment() -> None:
    table = {
        "example.org": {"username": "any-port", "password": "a"},
        "example.org:80": {"username": "port-80", "password": "b"},
        "other.org": {"username": "other", "password": "c"},
    }
    env = {CREDENTIALS_ENV: json.dumps(table)}
    found = credentials_for(scrape_params(), env)
    assert found is not None and found[0].username == "port-80" and found[1] == "environment"
    found = credentials_for(scrape_params(url="http://example.org:8080/"), env)
    assert found is not None and found[0].username == "any-port"
    assert credentials_for(scrape_params(url="http://third.org/"), env) is None
    own = scrape_params(credentials={"username": "mine", "password": "p"})
    found = credentials_for(own, env)
    assert found is not None and found[0].username == "mine" and found[1] == "params"


def test_masked_or_malformed_credentials_fail_clearly() -> None:
    masked = scrape_params(credentials={"username": MASK, "password": MASK})
    with pytest.raises(PermanentError, match="masked"):
        credentials_for(masked, {})
    with pytest.raises(PermanentError, match=CREDENTIALS_ENV) as refused:
        credentials_for(scrape_params(), {CREDENTIALS_ENV: "{not json, password=hunter2"})
    assert "hunter2" not in str(refused.value)


# --- recipes and extraction ---------------------------------------------------------------------


def test_recipes_are_data_and_chosen_by_url() -> None:
    assert set(recipes()) >= {"demo", "generic"}
    assert choose("http://127.0.0.1:8000/demo/in/ada-lovelace").name == "demo"
    assert choose("https://example.org/people/ada").name == "generic"
    assert choose("https://example.org/demo/in/ada", "generic").name == "generic"
    with pytest.raises(ValidationError, match="unknown recipe"):
        scrape_params(recipe="nope")


PROFILE_HTML = """<!doctype html><html><head><title>Zoë · profile</title>
<meta property="og:title" content="Zoë (OpenGraph)">
<meta property="og:description" content="OG headline">
<meta property="og:image" content="https://example.org/zoe.png">
<script type="application/ld+json">{"broken": </script>
<script type="application/ld+json">
{"@context": "https://schema.org", "@graph": [
  {"@type": "WebSite", "name": "Not a person"},
  {"@type": ["Thing", "Person"], "name": "Zo\\u00eb\\u200b Arnaud",
   "jobTitle": "Robotics lead",
   "address": {"@type": "PostalAddress", "addressLocality": "Montr\\u00e9al",
               "addressCountry": "Canada"},
   "description": "I build robots\\u0007.",
   "knowsAbout": ["Python", "Rust"], "sameAs": "https://example.org/zoe",
   "alumniOf": [{"@type": "EducationalOrganization", "name": "Polytechnique"}],
   "worksFor": {"@type": "Organization", "name": "Postes Canada"}}
]}
</script></head><body><h1>Zoë</h1></body></html>"""


def test_structured_data_is_read_from_html() -> None:
    data = structured_data(PROFILE_HTML)
    assert data["title"] == "Zoë · profile"
    assert data["meta"]["og:title"] == "Zoë (OpenGraph)"
    assert len(data["jsonld"]) == 1  # the broken block is skipped
    person = person_from_jsonld(data["jsonld"])
    assert person == {
        "name": "Zoë\u200b Arnaud",
        "headline": "Robotics lead",
        "location": "Montréal, Canada",
        "about": "I build robots\x07.",
        "image": None,
        "skills": ["Python", "Rust"],
        "links": [{"label": None, "url": "https://example.org/zoe"}],
        "education": [{"school": "Polytechnique", "degree": None, "start": None, "end": None}],
        "experience": [
            {
                "title": "Robotics lead",
                "company": "Postes Canada",
                "start": None,
                "end": None,
                "dates": None,
            }
        ],
    }


def test_profiles_merge_json_ld_recipe_and_opengraph() -> None:
    data = structured_data(PROFILE_HTML)
    main = {
        "jsonld": data["jsonld"],
        "meta": data["meta"],
        "fields": {"name": "Recipe name", "headline": None, "image": None, "about": None},
        "lists": {
            "experience": [
                {"title": "Lead", "company": "A", "start": "2021-04", "end": None, "dates": None},
                {
                    "title": "Dev",
                    "company": "B",
                    "start": None,
                    "end": None,
                    "dates": "Jan 2016 \u2013 Aug 2018",
                },
            ],
            "skills": [],
        },
    }
    pages = [{"lists": {"experience": [{"title": "Intern", "company": "C", "dates": "2012"}]}}]
    profile, sources = build_profile(main, pages, recipes()["demo"])
    assert profile["name"] == "Zoë\u200b Arnaud"  # JSON-LD first; sanitizing comes later
    assert profile["image"] == "https://example.org/zoe.png"  # only OpenGraph had one
    assert [(j["title"], j["start"], j["end"]) for j in profile["experience"]] == [
        ("Lead", "2021-04", None),
        ("Dev", "2016-01", "2018-08"),
        ("Intern", "2012-01", None),
    ]
    assert profile["skills"] == ["Python", "Rust"]  # the recipe found none: JSON-LD's
    assert sources == ["json-ld", "opengraph", "recipe:demo"]


@pytest.mark.parametrize(
    ("status", "kind", "text"),
    [
        (500, TransientError, "500 Internal Server Error"),
        (503, TransientError, "retried"),
        (429, TransientError, "Too Many Requests"),
        (404, PermanentError, "404 Not Found: there is no page"),
        (410, PermanentError, "410 Gone"),
        (403, PermanentError, "access denied"),
        (400, PermanentError, "400 Bad Request"),
    ],
)
def test_http_statuses_map_to_retry_or_not(status: int, kind: type, text: str) -> None:
    error = status_error("http://x.org/p", status)
    assert error is not None and isinstance(error, kind) and text in str(error)
    assert is_transient(error) is (kind is TransientError)
    assert status_error("http://x.org/p", 200) is None


# --- finding Chromium ---------------------------------------------------------------------------


def test_chromium_is_found_in_the_documented_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert browser.find_chromium({"STEPLOG_CHROMIUM": str(fake)}) == str(fake)
    with pytest.raises(PermanentError, match="STEPLOG_CHROMIUM='/nope' is not an executable"):
        browser.find_chromium({"STEPLOG_CHROMIUM": "/nope"})
    monkeypatch.setattr(browser, "SYSTEM_CHROMIUM", str(tmp_path / "missing"))
    assert browser.find_chromium({}, bundled=str(fake)) == str(fake)
    with pytest.raises(PermanentError) as missing:
        browser.find_chromium({}, bundled=str(tmp_path / "also-missing"))
    message = str(missing.value)
    assert "STEPLOG_CHROMIUM" in message and "chromium" in message and "Playwright" in message
