"""steplog behind a real Debian nginx running `infra/nginx.conf` (ports templated).

Proxy buffering is the most common point of failure of SSE behind nginx: these
tests prove events pass one at a time, idle streams survive a short read timeout,
and a stopping instance hands its streams and runs to another one behind the
same upstream.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from stream.sse.parser import SSEParser
from tests.conftest import ServerFactory
from tests.e2e.conftest import NginxFactory
from tests.support.api import assert_problem, get_run, start_run, wait_for_status
from tests.support.launcher import free_port
from tests.support.sse import Follower, Received, assert_contiguous
from tests.support.wait import wait_until


def assert_one_at_a_time(received: list[Received], *, first: int = 3) -> None:
    """Each tick reached the client before the next tick was committed.

    Ticks come 200 ms apart, so an event held back in a proxy buffer shows up as
    an event received only after its successor's commit time (`at`). The first
    ticks may arrive together as replay (the client connects just after the run
    starts), so judging starts at tick `first`.
    """
    ticks = [r for r in received if r.envelope["type"] == "step.progress"]
    committed = [_epoch(r.envelope["at"]) for r in ticks]
    pairs = list(zip(ticks, committed[1:], strict=False))[first - 1 :]
    assert len(pairs) >= 6, f"too few ticks to judge: {len(ticks)}"
    late = [
        (r.envelope["data"]["tick"], round(r.at - next_at, 3))
        for r, next_at in pairs
        if r.at >= next_at
    ]
    assert not late, f"(tick, seconds after the next tick's commit) held back: {late}"


def _epoch(at: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(at).timestamp()


def test_events_pass_through_nginx_one_at_a_time(
    server_factory: ServerFactory, nginx_factory: NginxFactory
) -> None:
    server = server_factory(ping_interval=1, poll_interval=0.2)
    proxy = nginx_factory([server.port])
    run = start_run(server, "ticker", count=12, interval_ms=200)
    follower = Follower(proxy.url + run["stream_url"]).start()
    follower.join(30)
    assert len(follower.connections) == 1, follower.summary()
    assert_contiguous([r.envelope for r in follower.received])
    assert_one_at_a_time(follower.received)

    # The access log names the path and the instance, never the run token.
    log = proxy.access_log_once_it_has(
        f"/runs/{run['run_id']}/events", f"upstream=127.0.0.1:{server.port}"
    )
    assert f"/runs/{run['run_id']}/events" in log and f"upstream=127.0.0.1:{server.port}" in log
    assert run["token"] not in log


def test_buffering_left_on_is_overridden_by_the_apps_header(
    server_factory: ServerFactory, nginx_factory: NginxFactory
) -> None:
    server = server_factory(ping_interval=1, poll_interval=0.2)
    proxy = nginx_factory([server.port], [("proxy_buffering off;", "proxy_buffering on;", 2)])
    run = start_run(server, "ticker", count=12, interval_ms=200)
    follower = Follower(proxy.url + run["stream_url"]).start()
    follower.join(30)
    assert_one_at_a_time(follower.received)


def test_the_check_catches_a_proxy_that_holds_events_back(
    server_factory: ServerFactory, nginx_factory: NginxFactory
) -> None:
    """The control for the two tests above: the same check fails on a proxy that buffers.

    Buffering alone does not hold small events back in nginx, but buffering with the
    app's header ignored and the stream compressed does (unbuffered, nginx flushes
    its gzip output at every chunk; buffered, only when a gzip buffer fills).
    """
    server = server_factory(ping_interval=1, poll_interval=0.2)
    edits = [
        ("proxy_buffering off;", "proxy_buffering on;", 2),
        ("gzip off;", "gzip on; gzip_types text/event-stream;", 1),
        ("proxy_cache off;", "proxy_cache off; proxy_ignore_headers X-Accel-Buffering;", 1),
    ]
    proxy = nginx_factory([server.port], edits)
    run = start_run(server, "ticker", count=12, interval_ms=200)
    follower = Follower(proxy.url + run["stream_url"], headers={"Accept-Encoding": "gzip"})
    follower.start().join(30)
    with pytest.raises(AssertionError, match="held back"):
        assert_one_at_a_time(follower.received)


def read_idle(url: str, seconds: float) -> tuple[bool, int, float]:
    """Hold a stream open for `seconds`: (ended early, pings seen, seconds it lasted)."""
    started = time.monotonic()
    parser = SSEParser()
    timeout = httpx.Timeout(5.0, read=seconds + 5)
    with httpx.Client(timeout=timeout) as http, http.stream("GET", url) as response:
        assert response.status_code == 200
        try:
            for chunk in response.iter_raw():
                parser.feed(chunk)
                if time.monotonic() - started >= seconds:
                    return False, parser.comments.count("ping"), time.monotonic() - started
        except httpx.RemoteProtocolError:  # nginx cut the response mid-body
            pass
    return True, parser.comments.count("ping"), time.monotonic() - started


def test_idle_stream_outlives_a_short_proxy_read_timeout(
    server_factory: ServerFactory, nginx_factory: NginxFactory
) -> None:
    short = [("proxy_read_timeout 1h;", "proxy_read_timeout 3s;", 1)]
    # No workers: the run stays queued, so its stream carries nothing but pings.
    pinged = server_factory(ping_interval=1, workers=0)
    proxy = nginx_factory([pinged.port], short)
    run = start_run(pinged, "ticker", count=1)
    ended, pings, lasted = read_idle(proxy.url + run["stream_url"], 10)
    assert not ended and pings >= 8, (ended, pings, lasted)

    # Control: with pings rarer than the read timeout, the same config cuts the stream.
    silent = server_factory(ping_interval=30, workers=0)
    control = nginx_factory([silent.port], short)
    run = start_run(silent, "ticker", count=1)
    ended, pings, lasted = read_idle(control.url + run["stream_url"], 10)
    assert ended and pings == 0 and 2.5 < lasted < 8, (ended, pings, lasted)


def test_sigterm_hands_the_stream_and_the_run_to_the_other_instance(
    server_factory: ServerFactory, nginx_factory: NginxFactory, tmp_path: Path
) -> None:
    graceful = 5
    shared = tmp_path / "shared"  # both instances on one SQLite file
    settings: dict[str, Any] = {
        "ping_interval": 1,
        "poll_interval": 0.2,
        "retry_ms": 200,
        "graceful_timeout": graceful,
    }
    first = server_factory(directory=shared, workers=1, **settings)
    second_port = free_port()
    proxy = nginx_factory([first.port, second_port])

    # The run starts on the first instance; the client follows it through nginx
    # (the second instance is not up yet, so nginx sends the stream to the first).
    run = start_run(first, "ticker", count=40, interval_ms=200)
    wait_for_status(first, run["run_id"], "running")
    follower = Follower(proxy.url + run["stream_url"], deadline=60).start()
    wait_until(lambda: len(follower.received) >= 8, 15, what="the first events through nginx")
    second = server_factory(directory=shared, port=second_port, workers=2, **settings)

    assert first.process is not None
    stopped_at = time.monotonic()
    first.process.send_signal(signal.SIGTERM)
    code = first.process.wait(timeout=graceful + 5)
    exit_seconds = time.monotonic() - stopped_at
    assert code == 0 and exit_seconds < graceful, (code, exit_seconds)

    follower.join(45)
    done = wait_for_status(second, run["run_id"], "succeeded", timeout=30)
    envelopes = [r.envelope for r in follower.received]
    # Every event exactly once, in order, through the handover; nothing committed lost.
    assert_contiguous(envelopes)
    assert envelopes[-1]["type"] == "run.succeeded" and envelopes[-1]["seq"] == done["last_seq"]
    with httpx.Client(base_url=second.url, headers=second.headers) as http:
        logged = http.get(f"/runs/{run['run_id']}/log").json()["events"]
    assert [e["seq"] for e in logged] == [e["seq"] for e in envelopes]

    # The first connection ended with the shutdown comment; a later one was served by
    # the second instance.
    cut = follower.connections[0]
    assert cut.ended and "server shutting down, reconnect" in cut.comments
    stream_lines = [
        line
        for line in proxy.access_log_once_it_has(f"upstream=127.0.0.1:{second.port}").splitlines()
        if f"/runs/{run['run_id']}/events" in line
    ]
    assert f"upstream=127.0.0.1:{second.port}" in stream_lines[-1], stream_lines

    # The lease came back at once: attempt 2 started long before a 30 s lease expiry.
    retry = next(e for e in envelopes if e["type"] == "run.retrying")
    started_again = next(e for e in envelopes if e["type"] == "run.started" and e["attempt"] == 2)
    assert retry["data"]["previous_attempt"] == 1
    handover = _epoch(started_again["at"]) - _epoch(envelopes[envelopes.index(retry) - 1]["at"])
    assert handover < 5, f"attempt 2 started {handover:.1f}s after attempt 1's last event"
    assert get_run(second, run["run_id"])["attempt"] == 2


def test_limits_answer_in_problem_json_through_nginx(
    server_factory: ServerFactory, nginx_factory: NginxFactory
) -> None:
    server = server_factory(ping_interval=1, workers=0, max_streams_per_token=1)
    proxy = nginx_factory([server.port])
    run = start_run(server, "ticker", count=1)
    url = proxy.url + run["stream_url"]
    with httpx.Client(timeout=10) as http, http.stream("GET", url) as first:
        assert first.status_code == 200
        refused = http.get(url)
        assert_problem(refused, 429)
        assert refused.headers["Retry-After"] == "5"

        # nginx refuses a body over 1 MiB itself, in the same format as the app.
        too_big = http.post(
            f"{proxy.url}/runs", headers=server.headers, content=b"x" * (2 * 1024 * 1024)
        )
        body = assert_problem(too_big, 413)
        assert "1 MiB" in body["detail"]

    # No instance answering: nginx's 503 is a problem too, with Retry-After.
    server.stop()
    unavailable = httpx.get(f"{proxy.url}/runs", headers=server.headers, timeout=10)
    assert_problem(unavailable, 503)
    assert unavailable.headers["Retry-After"] == "5"
    assert json.loads(unavailable.text)["title"] == "Service Unavailable"
