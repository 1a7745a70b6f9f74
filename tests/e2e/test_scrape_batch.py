"""`scrape_batch` end to end: many demo profiles in one run, in real Chromium.

What a user notices: every URL is a step of its own, a few run at once and no
more, one bad URL does not sink the others, the percentage only goes up, and a
worker killed half way costs only the URLs it had not finished.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import ServerFactory
from tests.e2e.test_scrape import (
    AS_OF,
    assert_pct_never_decreases,
    demo,
    demo_log,
    events_of,
    expected_experience,
    fetches,
    start_worker,
)
from tests.support.api import json_bytes, post_webhook, run_stream_url
from tests.support.launcher import ServerProcess
from tests.support.sse import assert_contiguous, read_stream, until_terminal
from tests.support.wait import wait_until

__all__ = ["demo"]  # the fixture, shared with test_scrape.py


def start_batch(server: ServerProcess, **params: Any) -> str:
    response = post_webhook(server, "scrape_batch", json_bytes({"as_of": AS_OF, **params}))
    assert response.status_code == 202, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def groups(events: list[dict[str, Any]], kind: str = "step.started") -> list[str]:
    """The per-URL step groups (not their sub-steps), in the order of `kind` events."""
    return [e["step"] for e in events if e["type"] == kind and ": " in (e["step"] or "")]


def most_at_once(events: list[dict[str, Any]]) -> int:
    """The most URL groups that were running at the same time."""
    running: set[str] = set()
    most = 0
    for event in events:
        name = event["step"] or ""
        if ": " not in name:
            continue
        if event["type"] == "step.started":
            running.add(name)
            most = max(most, len(running))
        elif event["type"] in ("step.completed", "step.failed"):
            running.discard(name)
    return most


def test_a_batch_scrapes_each_url_as_its_own_step_group(demo: ServerProcess) -> None:
    base = f"{demo.url}/demo"
    urls = [
        f"{base}/in/ada-lovelace",
        f"{base}/app/li-wei",  # client-rendered
        f"{base}/in/nobody",  # 404: listed, the batch goes on
        f"{base}/in/zoe-arnaud",  # behind the login the environment holds
        f"{base}/scroll/dmitri-ivanov",
    ]
    run_id = start_batch(demo, urls=urls, concurrency=2)
    events = events_of(demo, run_id, timeout=120)

    assert events[-1]["type"] == "run.succeeded", events[-1]
    assert_pct_never_decreases(events)
    port = demo.port
    assert sorted(groups(events)) == sorted(
        [
            f"url 1/5: 127.0.0.1:{port}/demo/in/ada-lovelace",
            f"url 2/5: 127.0.0.1:{port}/demo/app/li-wei",
            f"url 3/5: 127.0.0.1:{port}/demo/in/nobody",
            f"url 4/5: 127.0.0.1:{port}/demo/in/zoe-arnaud",
            f"url 5/5: 127.0.0.1:{port}/demo/scroll/dmitri-ivanov",
        ]
    )
    assert most_at_once(events) == 2  # concurrency=2: two at once, never three
    subs = [e["step"] for e in events if e["type"] == "step.started" and " · " in e["step"]]
    assert {s.split(" · ")[1] for s in subs} == {
        "login", "navigate", "expand", "extract", "analyze",
    }  # fmt: skip
    failed = [e["step"] for e in events if e["type"] == "step.failed"]
    assert f"url 3/5: 127.0.0.1:{port}/demo/in/nobody" in failed

    result = events[-1]["data"]["result"]
    assert (result["total"], result["succeeded"], result["failed"]) == (5, 4, 1)
    assert [r["index"] for r in result["results"]] == [1, 2, 4, 5]
    assert [r["profile"]["name"] for r in result["results"]] == [
        "Ada Lovelace", "\u674e\u4f1f", "Zo\u00eb Arnaud",
        "\u0414\u043c\u0438\u0442\u0440\u0438\u0439 \u0418\u0432\u0430\u043d\u043e\u0432",
    ]  # fmt: skip
    assert result["results"][3]["profile"]["skills"][:2] == ["Go", "C++"]  # golang/Go once
    assert result["results"][2]["profile"]["experience"] == expected_experience("zoe-arnaud")
    (error,) = result["errors"]
    assert error["index"] == 3 and error["url"] == urls[2] and not error["transient"]
    assert "404 Not Found" in error["error"]
    last_progress = [e for e in events if e["type"] == "step.progress"][-1]
    assert last_progress["data"]["batch"] == {
        "total": 5, "succeeded": 4, "failed": 1, "reused": 0, "pending": 0,
    }  # fmt: skip
    wait_until(lambda: demo_log(demo)["open_pages"] == 0, 10, what="demo pages to close")


def test_the_run_fails_only_as_fail_when_says(demo: ServerProcess) -> None:
    bad = [f"{demo.url}/demo/in/nobody-{n}" for n in (1, 2)]
    good = f"{demo.url}/demo/in/ada-lovelace"
    all_bad = events_of(demo, start_batch(demo, urls=bad))
    assert all_bad[-1]["type"] == "run.failed"
    assert "2 of 2 URLs failed (fail_when=all)" in all_bad[-1]["message"]
    assert all_bad[-1]["attempt"] == 1  # permanent failures: no retry

    never = events_of(demo, start_batch(demo, urls=bad, fail_when="never"))
    assert never[-1]["type"] == "run.succeeded"
    assert never[-1]["data"]["result"]["failed"] == 2

    any_bad = events_of(demo, start_batch(demo, urls=[good, bad[0]], fail_when="any"))
    assert any_bad[-1]["type"] == "run.failed"
    assert "1 of 2 URLs failed (fail_when=any)" in any_bad[-1]["message"]


def test_a_batch_over_the_limit_is_refused_at_intake(demo: ServerProcess) -> None:
    urls = [f"{demo.url}/demo/in/ada-lovelace?n={n}" for n in range(51)]
    for body, where, text in (
        ({"urls": urls}, ["urls"], "at most 50 URLs per batch"),
        ({"urls": []}, ["urls"], "at least 1"),
        ({"urls": ["file:///etc/passwd"]}, ["urls"], "URL 1: only http and https"),
        ({"urls": [urls[0]], "concurrency": 9}, ["concurrency"], "less than or equal to 8"),
    ):
        response = post_webhook(demo, "scrape_batch", json_bytes(body))
        assert response.status_code == 422, response.text
        error = response.json()["errors"][0]
        assert error["loc"] == where and text in error["msg"], error


def test_a_killed_worker_resumes_the_batch_at_the_first_unfinished_url(
    server_factory: ServerFactory, tmp_path: Path, chromium: str
) -> None:
    server = server_factory(
        workers=0, demo=1, chromium=chromium, lease_seconds=2, poll_interval=0.1, ping_interval=1
    )
    slugs = ["ada-lovelace", "li-wei", "dmitri-ivanov", "ngozi-nystrom", "ada-lovelace"]
    urls = [f"{server.url}/demo/in/{slug}?delay_ms=700&n={n}" for n, slug in enumerate(slugs)]
    first = start_worker(server, tmp_path / "worker-1.log")
    second: subprocess.Popen[bytes] | None = None
    try:
        run_id = start_batch(server, urls=urls, concurrency=1)

        def at_url_3(events: list[Any], _parser: Any) -> bool:
            envelopes = [json.loads(e.data) for e in events if e.data.startswith("{")]
            return any(name.startswith("url 3/5:") for name in groups(envelopes))

        before = read_stream(run_stream_url(server, run_id), headers=server.headers,
                             until=at_url_3, timeout=90)  # fmt: skip
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        done_before = groups(before.envelopes, "step.completed")
        assert [name[:8] for name in done_before] == ["url 1/5:", "url 2/5:"]  # then killed at 3

        second = start_worker(server, tmp_path / "worker-2.log")
        rest = read_stream(
            run_stream_url(server, run_id),
            headers={**server.headers, "Last-Event-ID": before.last_id},
            until=until_terminal,
            timeout=120,
        )
        events = before.envelopes + rest.envelopes
        assert_contiguous(events)
        assert events[-1]["type"] == "run.succeeded", events[-1]
        assert events[-1]["attempt"] == 2
        assert_pct_never_decreases(events)

        again = [e for e in events if e["attempt"] == 2]
        reused = [e["step"] for e in again if e["type"] == "step.completed"
                  and (e["data"] or {}).get("reused")]  # fmt: skip
        assert reused == done_before  # the finished URLs, shown as reused
        started_again = groups(again)
        assert not set(started_again) & set(done_before)  # and never loaded again
        for url, n in zip(urls, range(len(urls)), strict=True):
            path, query = url.split(str(server.port), 1)[1].split("?")
            count = fetches(server, path, query)
            finished = any(name.startswith(f"url {n + 1}/5:") for name in done_before)
            assert count == 1 if finished else count in (1, 2), (url, count)
        result = events[-1]["data"]["result"]
        assert result["succeeded"] == 5 and result["reused"] == len(done_before)
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=20)
