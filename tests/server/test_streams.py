"""The SSE endpoints as a client sees them: resume, heartbeats, endings, the global stream."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stream.sse.parser import ParsedEvent, SSEParser
from tests.support.api import (
    ENVELOPE_KEYS,
    assert_problem,
    client,
    get_run,
    run_stream_url,
    start_run,
    wait_for_status,
)
from tests.support.launcher import ServerProcess
from tests.support.sse import assert_contiguous, at_least, read_stream
from tests.support.wait import wait_until

EVENT_NAMES = {"run.succeeded": "completed", "run.failed": "failed", "run.cancelled": "cancelled"}
"""The SSE `event:` of each terminal event type; every other event is `progress`."""


def expected_types(ticks: int) -> list[str]:
    return [
        "run.queued",
        "run.started",
        "step.started",
        *["step.progress"] * ticks,
        "step.completed",
        "run.succeeded",
    ]


def assert_well_framed(events: list[ParsedEvent], run_id: str) -> list[dict[str, Any]]:
    """Each event is one envelope whose `id:` is its seq, named as the contract says."""
    envelopes = []
    for event in events:
        envelope = json.loads(event.data)
        assert set(envelope) == ENVELOPE_KEYS, envelope
        assert envelope["run_id"] == run_id
        assert event.id == str(envelope["seq"])
        assert event.event == EVENT_NAMES.get(envelope["type"], "progress"), event
        envelopes.append(envelope)
    return envelopes


def test_resume_with_last_event_id_gets_every_event_once(server: ServerProcess) -> None:
    ticks = 20
    run = start_run(server, "ticker", count=ticks, interval_ms=100)
    run_id, url = run["run_id"], server.url + run["stream_url"]

    # 1. Read part of the live run, then hang up.
    first = read_stream(url, until=at_least(5))
    assert not first.ended
    assert get_run(server, run_id)["status"] == "running"

    # 2. Reconnect with Last-Event-ID while it is still live; read a little more, hang up.
    second = read_stream(url, headers={"Last-Event-ID": first.last_id}, until=at_least(4))
    assert not second.ended
    assert second.events[0].id == str(int(first.last_id) + 1)

    # 3. After the run has ended, reconnecting replays exactly the rest and ends the response.
    finished = wait_for_status(server, run_id, "succeeded", timeout=20)
    third = read_stream(url, headers={"Last-Event-ID": second.last_id})
    assert third.ended
    assert third.events[-1].event == "completed"

    # Nothing lost, nothing twice, in order.
    events = first.events + second.events + third.events
    envelopes = assert_well_framed(events, run_id)
    assert_contiguous(envelopes)
    assert [env["type"] for env in envelopes] == expected_types(ticks)
    assert [env["data"]["tick"] for env in envelopes if env["type"] == "step.progress"] == list(
        range(1, ticks + 1)
    )
    assert envelopes[-1]["seq"] == finished["last_seq"]

    # 4. At the end of a finished run there is nothing left: 204 tells EventSource to stop.
    fourth = read_stream(url, headers={"Last-Event-ID": third.last_id})
    assert fourth.status == 204
    assert fourth.raw == b""
    by_query = read_stream(url, params={"last_event_id": third.last_id})
    assert by_query.status == 204


def test_resume_live_follows_to_the_end(server: ServerProcess) -> None:
    ticks = 20
    run = start_run(server, "ticker", count=ticks, interval_ms=100)
    run_id = run["run_id"]
    url = run_stream_url(server, run_id)

    first = read_stream(url, headers=server.headers, until=at_least(8))
    # Resume with the query parameter this time (what a client that cannot set headers does).
    rest = read_stream(url, headers=server.headers, params={"last_event_id": first.last_id})

    assert rest.ended
    envelopes = assert_well_framed(first.events + rest.events, run_id)
    assert_contiguous(envelopes)
    assert [env["type"] for env in envelopes] == expected_types(ticks)
    assert envelopes[-1]["seq"] == get_run(server, run_id)["last_seq"]

    # Given both, the Last-Event-ID header (what EventSource sends) wins over the query.
    both = read_stream(
        url, headers={**server.headers, "Last-Event-ID": "20"}, params={"last_event_id": "2"}
    )
    assert both.events == (first.events + rest.events)[20:]


def test_cursor_ahead_of_a_live_run_is_refused(server: ServerProcess) -> None:
    run = start_run(server, "ticker", count=2, interval_ms=60_000)
    read_stream(server.url + run["stream_url"], until=at_least(4))  # the first tick is out

    with client(server) as http:
        response = http.get(f"/runs/{run['run_id']}/events", headers={"Last-Event-ID": "50"})

    body = assert_problem(response, 400)
    assert "50" in body["detail"]


def test_failing_run_ends_the_stream_with_failed(server: ServerProcess) -> None:
    run = start_run(server, "ticker", count=5, interval_ms=0, fail_at=3)

    stream = read_stream(server.url + run["stream_url"])

    assert stream.ended
    envelopes = assert_well_framed(stream.events, run["run_id"])
    assert_contiguous(envelopes)
    assert stream.events[-1].event == "failed"
    assert [env["type"] for env in envelopes] == [
        "run.queued",
        "run.started",
        "step.started",
        "step.progress",
        "step.progress",
        "step.failed",
        "run.failed",
    ]
    assert "tick 3" in envelopes[-2]["message"]
    assert "tick 3" in envelopes[-1]["message"]
    failed = get_run(server, run["run_id"])
    assert failed["status"] == "failed"
    assert "tick 3" in failed["error"]
    assert failed["result"] is None
    assert failed["finished_at"] is not None


def test_idle_streams_get_pings(server: ServerProcess) -> None:
    """With ping_interval=1 an idle stream hears `: ping` every second, and nothing else."""
    run = start_run(server, "ticker", count=2, interval_ms=60_000)
    # Wait for the first tick: from then on the run sleeps and the log is quiet.
    wait_until(lambda: get_run(server, run["run_id"])["last_seq"] >= 4, what="tick 1")
    assert get_run(server, run["run_id"])["last_seq"] == 4

    def two_pings(events: list[ParsedEvent], parser: SSEParser) -> bool:
        return len(events) >= 4 and parser.comments.count("ping") >= 2

    def two_pings_on_global(_events: list[ParsedEvent], parser: SSEParser) -> bool:
        return parser.comments.count("ping") >= 2

    # Both streams at once: the run's own (replayed to tick 1, then idle) and the global
    # one resumed at the log's end (the run is the only one, so its seq 4 is position 4).
    with ThreadPoolExecutor(2) as pool:
        run_reader = pool.submit(
            read_stream, server.url + run["stream_url"], until=two_pings, timeout=10
        )
        global_reader = pool.submit(
            read_stream,
            f"{server.url}/events",
            headers={**server.headers, "Last-Event-ID": "4"},
            until=two_pings_on_global,
            timeout=10,
        )
        run_stream, global_stream = run_reader.result(), global_reader.result()

    assert [json.loads(e.data)["type"] for e in run_stream.events] == [
        "run.queued",
        "run.started",
        "step.started",
        "step.progress",
    ]
    assert b": ping\n\n" in run_stream.raw
    assert global_stream.events == []
    assert global_stream.raw.startswith(b"retry: ")
    assert b": ping\n\n" in global_stream.raw


def test_global_stream_resumes_after_a_position(server: ServerProcess) -> None:
    first = start_run(server, "ticker", count=2, interval_ms=0)["run_id"]
    second = start_run(server, "ticker", count=3, interval_ms=0)["run_id"]
    wait_for_status(server, first, "succeeded")
    last_seq = wait_for_status(server, second, "succeeded")["last_seq"]
    total = get_run(server, first)["last_seq"] + last_seq

    everything = read_stream(f"{server.url}/events", headers=server.headers, until=at_least(total))

    envelopes = everything.envelopes
    assert [env["pos"] for env in envelopes] == list(range(1, total + 1))
    assert [event.id for event in everything.events] == [str(n) for n in range(1, total + 1)]
    assert {env["run_id"] for env in envelopes} == {first, second}
    for run_id in (first, second):
        assert_contiguous([env for env in envelopes if env["run_id"] == run_id])
    # Terminal events keep their names on the global stream, which does not end with them.
    names = {
        env["type"]: event.event for env, event in zip(envelopes, everything.events, strict=True)
    }
    assert names["run.succeeded"] == "completed"
    assert not everything.ended

    middle = total // 2
    resumed = read_stream(
        f"{server.url}/events",
        headers={**server.headers, "Last-Event-ID": str(middle)},
        until=at_least(total - middle),
    )
    by_query = read_stream(
        f"{server.url}/events",
        headers=server.headers,
        params={"last_event_id": str(middle)},
        until=at_least(total - middle),
    )

    assert resumed.events == everything.events[middle:]
    assert by_query.events == everything.events[middle:]

    # Live: a run started while the stream is open arrives after the last position seen.
    started: list[str] = []

    def start_a_run_once_connected(events: list[ParsedEvent], _parser: SSEParser) -> bool:
        if not started:  # the first bytes (the retry: line) are in: the stream is open
            started.append(start_run(server, "ticker", count=1, interval_ms=0)["run_id"])
        return any(json.loads(e.data)["type"] == "run.succeeded" for e in events)

    live = read_stream(
        f"{server.url}/events",
        headers={**server.headers, "Last-Event-ID": str(total)},
        until=start_a_run_once_connected,
    )
    assert live.events[0].id == str(total + 1)
    assert {env["run_id"] for env in live.envelopes} == set(started)
    assert [env["pos"] for env in live.envelopes] == list(
        range(total + 1, total + 1 + len(live.events))
    )
