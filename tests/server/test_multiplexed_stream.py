"""`GET /streams`: several runs on one stream, each authorised by its own token.

Real server, real sockets, the project's WHATWG parser: what a browser's
SharedWorker (stream/web/static/hub.js) sees.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from stream.sse.parser import ParsedEvent
from tests.support.api import assert_problem, client, start_run, wait_for_status
from tests.support.launcher import ServerProcess
from tests.support.probes import metric
from tests.support.sse import read_stream
from tests.support.wait import wait_until

FORGED = "9999999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


def run_param(started: dict[str, Any]) -> str:
    return f"{started['run_id']}:{started['token']}"


def streams_url(server: ServerProcess, *runs: str, **extra: str) -> str:
    query = httpx.QueryParams([("run", r) for r in runs] + list(extra.items()))
    return f"{server.url}/streams?{query}"


def data(event: ParsedEvent) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(event.data)
    return loaded


def terminals_of(*run_ids: str):  # type: ignore[no-untyped-def]
    """Hang up once every one of `run_ids` sent its terminal event."""

    def done(events: list[ParsedEvent], _parser: object) -> bool:
        ended = {data(e)["run_id"] for e in events if e.event in ("completed", "failed")}
        return ended >= set(run_ids)

    return done


def test_two_runs_on_one_stream_and_a_forged_token_refused_alone(server: ServerProcess) -> None:
    first = start_run(server, "ticker", count=5, interval_ms=50)
    second = start_run(server, "ticker", count=7, interval_ms=30)
    other = start_run(server, "ticker", count=2, interval_ms=10)
    url = streams_url(
        server,
        run_param(first),
        run_param(second),
        f"{other['run_id']}:{FORGED}",
        last_event_id="0",
    )
    read = read_stream(url, until=terminals_of(first["run_id"], second["run_id"]), timeout=30)
    assert read.status == 200
    refused = [data(e) for e in read.events if e.event == "refused"]
    assert refused == [{"run_id": other["run_id"], "reason": "forbidden"}]
    runs = [e for e in read.events if e.event not in ("refused", "position")]
    by_run: dict[str, list[int]] = {}
    for event in runs:
        envelope = data(event)
        assert event.id == str(envelope["pos"])  # one cursor: the global position
        by_run.setdefault(envelope["run_id"], []).append(envelope["seq"])
    assert set(by_run) == {first["run_id"], second["run_id"]}  # nothing of the refused run
    for seqs in by_run.values():
        assert seqs == list(range(1, len(seqs) + 1))  # every event once, in order
    ids = [int(e.id) for e in read.events if e.id]
    assert ids == sorted(ids)


def test_resuming_from_a_position_sends_only_what_came_after(server: ServerProcess) -> None:
    first = start_run(server, "ticker", count=4, interval_ms=10)
    second = start_run(server, "ticker", count=4, interval_ms=10)
    wait_for_status(server, first["run_id"], "succeeded")
    wait_for_status(server, second["run_id"], "succeeded")
    runs = (run_param(first), run_param(second))
    whole = read_stream(
        streams_url(server, *runs, last_event_id="0"),
        until=terminals_of(first["run_id"], second["run_id"]),
    )
    envelopes = [data(e) for e in whole.events if e.event not in ("refused", "position")]
    middle = envelopes[len(envelopes) // 2]["pos"]
    rest = read_stream(
        streams_url(server, *runs),
        headers={"Last-Event-ID": str(middle)},
        until=terminals_of(first["run_id"], second["run_id"]),
    )
    resumed = [data(e) for e in rest.events if e.event not in ("refused", "position")]
    assert resumed == [e for e in envelopes if e["pos"] > middle]


def test_without_a_cursor_it_starts_at_the_head_and_idle_positions_follow_it(
    server: ServerProcess,
) -> None:
    watched = start_run(server, "ticker", count=1, interval_ms=1)
    wait_for_status(server, watched["run_id"], "succeeded")
    with client(server) as http:
        head = http.get("/runs", params={"limit": 1}).json()["head"]

    def moved(events: list[ParsedEvent], _parser: object) -> bool:
        return any(e.event == "position" and int(e.id) > head for e in events)

    elsewhere = start_run(server, "ticker", count=3, interval_ms=10)  # not in the set
    read = read_stream(streams_url(server, run_param(watched)), until=moved, timeout=20)
    positions = [int(e.id) for e in read.events if e.event == "position"]
    assert positions[0] >= head  # no replay of the watched run's old events
    assert not [e for e in read.events if e.event not in ("position", "refused")]
    wait_for_status(server, elsewhere["run_id"], "succeeded")


def test_all_needs_the_api_key_and_the_key_opens_any_run(server: ServerProcess) -> None:
    started = start_run(server, "ticker", count=2, interval_ms=10)
    wait_for_status(server, started["run_id"], "succeeded")

    def positioned(events: list[ParsedEvent], _parser: object) -> bool:
        return any(e.event == "position" for e in events)

    anonymous = read_stream(streams_url(server, all="1"), until=positioned)
    assert [data(e) for e in anonymous.events if e.event == "refused"] == [
        {"run_id": "*", "reason": "forbidden"}
    ]
    keyed = read_stream(
        streams_url(server, started["run_id"], all="1", last_event_id="0"),
        headers=server.headers,
        until=terminals_of(started["run_id"]),
    )
    assert not [e for e in keyed.events if e.event == "refused"]


def test_a_token_holds_a_slot_of_its_cap_on_a_shared_stream(
    server_factory: Any,
) -> None:
    server: ServerProcess = server_factory(max_streams_per_token=1, ping_interval=1)
    run = start_run(server, "ticker", count=200, interval_ms=100)
    other = start_run(server, "ticker", count=1, interval_ms=1)
    opened: list[int] = []

    def hold(events: list[ParsedEvent], _parser: object) -> bool:
        if not opened:
            opened.append(1)
            again = httpx.get(streams_url(server, run_param(other), run_param(run)), timeout=10)
            assert_problem(again, 429)
            assert again.headers["Retry-After"] == "5"
        return True

    read_stream(streams_url(server, run_param(run)), until=hold)
    assert opened
    wait_until(
        lambda: metric(server.url, "steplog_open_streams") == 0, 10, what="the stream to close"
    )


def test_bad_requests_are_problems(server: ServerProcess) -> None:
    run = start_run(server, "ticker", count=1, interval_ms=1)
    with httpx.Client(timeout=10) as http:
        assert_problem(http.get(f"{server.url}/streams"), 400)
        assert_problem(http.get(streams_url(server, "not-a-run:x")), 400)
        many = [f"{run['run_id'][:-4]}{i:04x}:x" for i in range(65)]
        assert_problem(http.get(streams_url(server, *many)), 400)
        ahead = http.get(streams_url(server, run_param(run), last_event_id="999999"))
        assert_problem(ahead, 400)
        assert_problem(http.get(streams_url(server, run_param(run), last_event_id="-1")), 400)
