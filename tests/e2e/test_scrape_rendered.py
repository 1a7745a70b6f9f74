"""Pages that draw themselves, scraped in real Chromium from the demo site.

A client-rendered shell (the profile arrives by fetch after `load`, its JSON-LD
later still), a profile inside an open shadow root with its education in a
same-origin iframe, an endless experience list, and pages whose scripts fetch
what the target guard must refuse (a loopback listener, the server's own
`/metrics`).
"""

from __future__ import annotations

from typing import Any

from tests.e2e.test_scrape import (
    Trap,
    assert_pct_never_decreases,
    demo,
    demo_profile,
    events_of,
    expected_experience,
    fetches,
    start_scrape,
    steps,
    trap,
)
from tests.support.launcher import ServerProcess

__all__ = ["demo", "trap"]  # the fixtures, shared with test_scrape.py


def succeeded(server: ServerProcess, **params: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    run_id = start_scrape(server, **params)["run_id"]
    events = events_of(server, run_id)
    assert events[-1]["type"] == "run.succeeded", events[-1]
    assert_pct_never_decreases(events)
    result: dict[str, Any] = events[-1]["data"]["result"]
    return result, events


def schools(slug: str) -> list[str]:
    return [s["school"] for s in demo_profile(slug)["education"]]


def test_a_client_rendered_profile_is_waited_for_and_read(demo: ServerProcess) -> None:
    result, events = succeeded(demo, url=f"{demo.url}/demo/app/ada-lovelace?api_delay_ms=1500")

    waiting = [e for e in events if e["type"] == "step.progress" and e["step"] == "navigate"]
    assert [e["message"] for e in waiting] == ["Waiting for the page to render"]
    assert result["recipe"] == "generic"
    # JSON-LD inserted by the script after load, and microdata it drew: both read.
    assert result["sources"] == ["json-ld", "recipe:generic"]
    profile = result["profile"]
    data = demo_profile("ada-lovelace")
    assert profile["name"] == data["name"]
    assert profile["headline"] == data["headline"]
    assert profile["image"] == f"{demo.url}/demo/avatar/ada-lovelace.svg"
    assert profile["experience"] == expected_experience("ada-lovelace")
    assert [s["school"] for s in profile["education"]] == schools("ada-lovelace")
    assert profile["skills"] == data["skills"]
    assert fetches(demo, "/demo/api/profiles/ada-lovelace") == 1


def test_a_profile_in_a_shadow_root_and_an_iframe_is_reachable(demo: ServerProcess) -> None:
    result, _events = succeeded(demo, url=f"{demo.url}/demo/shadow/li-wei")

    profile = result["profile"]
    data = demo_profile("li-wei")
    assert result["sources"] == ["recipe:generic"]  # no JSON-LD: the shadow DOM alone
    assert profile["name"] == data["name"]
    assert profile["location"] and profile["about"]
    assert profile["experience"] == expected_experience("li-wei")
    assert [s["school"] for s in profile["education"]] == schools("li-wei")  # the iframe's
    assert fetches(demo, "/demo/frame/li-wei/education") == 1


def test_an_endless_list_is_scrolled_until_nothing_new_appears(demo: ServerProcess) -> None:
    url = f"{demo.url}/demo/scroll/ngozi-nystrom?batch_delay_ms=400"
    result, events = succeeded(demo, url=url)

    assert result["profile"]["experience"] == expected_experience("ngozi-nystrom")  # all 30
    assert fetches(demo, "/demo/api/profiles/ngozi-nystrom/experience") == 5
    assert not [e for e in events if e["type"] == "log" and "stopped scrolling" in e["message"]]


def test_an_endless_list_stops_at_max_pages(demo: ServerProcess) -> None:
    result, events = succeeded(demo, url=f"{demo.url}/demo/scroll/ngozi-nystrom", max_pages=2)

    assert result["profile"]["experience"] == expected_experience("ngozi-nystrom")[:15]
    stopped = [e for e in events if e["type"] == "log" and "stopped scrolling" in e["message"]]
    assert len(stopped) == 1 and "max_pages" in stopped[0]["message"]


def test_what_a_pages_script_fetches_meets_the_target_guard(
    demo: ServerProcess, trap: Trap
) -> None:
    cases = {
        f"{demo.url}/demo/traps/fetch?src=http://127.0.0.1:{trap.port}/x": "loopback address",
        f"{demo.url}/demo/traps/fetch?src=/metrics": "only /demo/ may be fetched",
        f"{demo.url}/demo/traps/redirect?to={demo.url}/metrics": "only /demo/ may be fetched",
        f"{demo.url}/metrics": "only /demo/ may be fetched",
        f"{demo.url}/runs": "only /demo/ may be fetched",
    }
    runs = {url: start_scrape(demo, url=url)["run_id"] for url in cases}
    for url, run_id in runs.items():
        events = events_of(demo, run_id)
        last = events[-1]
        assert last["type"] == "run.failed", (url, last)
        assert "TargetRefused: refused to fetch" in last["message"], (url, last["message"])
        assert cases[url] in last["message"], (url, last["message"])
        assert last["attempt"] == 1
        if "/demo/" not in url:
            assert steps(events) == [], "a refused URL must not even start the browser"
    assert trap.connections == []
    assert fetches(demo, "/demo/traps/fetch") == 2
