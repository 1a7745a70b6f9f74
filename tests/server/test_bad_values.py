"""Values the log cannot take as they are, end to end on a real server.

A lone surrogate fails only the call that passed it (never the other runs whose
events share its group commit), and NaN, ±Infinity and other values JSON has no
form for arrive as JSON a browser's `JSON.parse` reads, on every way out: the
run's stream, the global stream, `/runs/{id}/log` and the run record.
"""

from __future__ import annotations

import json
import os
import threading
from types import TracebackType
from typing import Any

import pytest

from stream.sse.parser import ParsedEvent, SSEParser
from tests.conftest import ServerFactory
from tests.jsonstrict import strict_loads
from tests.support.api import (
    assert_problem,
    client,
    http_client,
    run_ids,
    start_run,
    wait_for_status,
)
from tests.support.launcher import ROOT, ServerProcess
from tests.support.sse import assert_contiguous, read_stream

MODULE = "tests.server.value_functions"
ENDED = ("succeeded", "failed", "cancelled")
TICKS = 150


@pytest.fixture
def values_server(server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> ServerProcess:
    """A real server with 4 worker slots that also knows the functions of `MODULE`."""
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) if not path else f"{ROOT}{os.pathsep}{path}")
    return server_factory(ping_interval=1, poll_interval=0.2, workers=4, functions=MODULE)


class Readiness:
    """Asks `/readyz` over and over from a thread, keeping every answer that was not 200."""

    def __init__(self, server: ServerProcess) -> None:
        self.url = f"{server.url}/readyz"
        self.answers = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Readiness:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(30)

    def _poll(self) -> None:
        with http_client() as http:
            while not self._stop.is_set():
                response = http.get(self.url)
                self.answers += 1
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text}")
                self._stop.wait(0.05)  # pacing between two questions, not synchronisation


def has_message(part: str) -> Any:
    def until(events: list[ParsedEvent], _parser: SSEParser) -> bool:
        return any(part in (json.loads(e.data)["message"] or "") for e in events)

    return until


def test_lone_surrogates_fail_only_the_function_that_emits_them(
    values_server: ServerProcess,
) -> None:
    """Three tickers share group commits with a function emitting lone surrogates in a
    loop: they finish on their first attempt with every tick, the emitter's run fails
    with an error that says why, and the instance stays ready throughout."""
    server = values_server
    with Readiness(server) as ready:
        poison = start_run(server, "poison", tickers=3)
        # Only once it is at it start the tickers, so that all their appends run beside it.
        read_stream(server.url + poison["stream_url"], until=has_message("poisoning"))
        tickers = [start_run(server, "ticker", count=TICKS, interval_ms=5) for _ in range(3)]
        finals = [wait_for_status(server, t["run_id"], *ENDED, timeout=90) for t in tickers]
        bad = wait_for_status(server, poison["run_id"], *ENDED, timeout=90)
    assert ready.failures == [] and ready.answers > 0

    for started, final in zip(tickers, finals, strict=True):
        assert (final["status"], final["attempt"]) == ("succeeded", 1), final
        envelopes = read_stream(server.url + started["stream_url"]).envelopes
        assert_contiguous(envelopes)
        assert {env["attempt"] for env in envelopes[1:]} == {1}
        ticks = [env["data"]["tick"] for env in envelopes if env["type"] == "step.progress"]
        assert ticks == list(range(1, TICKS + 1))

    assert bad["status"] == "failed" and bad["attempt"] == 1
    assert bad["error"].startswith("InvalidEvent: message contains a lone surrogate (U+D800)")
    envelopes = read_stream(server.url + poison["stream_url"]).envelopes
    assert_contiguous(envelopes)
    assert envelopes[-1]["type"] == "run.failed" and envelopes[-1]["message"] == bad["error"]
    [summary] = [env for env in envelopes if "appends refused" in (env["message"] or "")]
    assert summary["data"]["refused"] > 0
    # Nothing it tried to write with a surrogate is in the log; every good line is.
    messages = [env["message"] or "" for env in envelopes]
    assert not any("surrogate" in message for message in messages[:-2])
    assert "between, round 0" in messages
    rounds = sum(message.startswith("between, round") for message in messages)
    assert summary["data"]["refused"] == 3 * rounds


def read_everything_strictly(server: ServerProcess, started: dict[str, Any]) -> dict[str, Any]:
    """Every way a run's values go out, each parsed as strictly as a browser would;
    returns the run record."""
    run_id = started["run_id"]
    stream = read_stream(server.url + started["stream_url"])
    assert stream.ended and stream.events
    for event in stream.events:
        strict_loads(event.data)

    def reached_the_end(events: list[ParsedEvent], _parser: SSEParser) -> bool:
        return any(
            json.loads(e.data)["run_id"] == run_id and e.event == "completed" for e in events
        )

    everything = read_stream(f"{server.url}/events", headers=server.headers, until=reached_the_end)
    for event in everything.events:
        strict_loads(event.data)
    with client(server) as http:
        page = http.get(f"/runs/{run_id}/log")
        record = http.get(f"/runs/{run_id}")
    assert page.status_code == 200 and record.status_code == 200
    logged = strict_loads(page.text)["events"]
    assert logged == [strict_loads(event.data) for event in stream.events]
    run: dict[str, Any] = strict_loads(record.text)
    return run


def test_values_that_are_not_json_arrive_as_json_a_browser_reads(
    values_server: ServerProcess,
) -> None:
    server = values_server
    started = start_run(server, "odd_values")
    wait_for_status(server, started["run_id"], *ENDED, timeout=30)
    run = read_everything_strictly(server, started)
    assert run["status"] == "succeeded", run

    events = {
        env["message"]: env for env in read_stream(server.url + started["stream_url"]).envelopes
    }
    value = {name: events[name]["data"]["value"] for name in ("nan", "infinities", "nested")}
    assert value == {
        "nan": None,
        "infinities": [None, None, -0.0, 1e308],
        "nested": {"deep": [{"deeper": [None, {"x": None}]}], "NaN": "nan key", "Infinity": 1},
    }
    assert events["huge int"]["data"]["value"] == 2**200
    assert events["set"]["data"]["value"] == "{1, 2}"
    assert events["decimal nan"]["data"]["value"] == "NaN"  # a string: JSON can hold it
    assert events["point"]["data"]["value"] == "Point(x=nan, y=inf)"
    assert events["odd keys"]["data"]["value"] == {
        "(1, 2)": "tuple key",
        "null": "none key",
        "1.5": "float key",
    }

    result = run["result"]
    assert (result["score"], result["bounds"]) == (None, [None, None])
    refused = result["refused"]
    assert refused["surrogate"].startswith("data['value'] contains a lone surrogate (U+D800)")
    assert refused["surrogate key"].startswith("data['value'] key '\\udfff' contains a lone")
    assert refused["too long an int"].startswith("data cannot be encoded as JSON: ValueError")
    assert refused["nan pct"] == "pct must be between 0 and 100, not nan"
    assert refused["inf pct"] == "pct must be a finite number, not inf"


def test_a_refusal_reaches_the_thread_of_a_sync_function(values_server: ServerProcess) -> None:
    server = values_server
    started = start_run(server, "odd_values_sync")
    wait_for_status(server, started["run_id"], *ENDED, timeout=30)
    run = read_everything_strictly(server, started)
    assert run["status"] == "succeeded", run
    assert run["result"]["score"] is None
    assert run["result"]["refused"].startswith("message contains a lone surrogate (U+D800)")


def test_a_request_whose_params_cannot_be_stored_is_refused(values_server: ServerProcess) -> None:
    """JSON can spell a lone surrogate (`"\\ud800"`); the log cannot store one: a 400
    that says so, and nothing written."""
    server = values_server
    known = run_ids(server)
    body = b'{"function": "odd_values", "params": {"label": "odd \\ud800"}}'
    with client(server) as http:
        response = http.post("/runs", content=body, headers={"content-type": "application/json"})
    problem = assert_problem(response, 400)
    assert problem["detail"].startswith("params['label'] contains a lone surrogate (U+D800)")
    assert run_ids(server) == known


def test_a_secret_that_cannot_be_stored_is_refused(values_server: ServerProcess) -> None:
    """A secret is encrypted before it is stored: a lone surrogate in one is refused the
    same way (a 400 naming the field, nothing written), not a 500 from the encryption."""
    server = values_server
    known = run_ids(server)
    body = (
        b'{"function": "scrape", "params": {"url": "https://example.com/in/zoe",'
        b' "credentials": {"username": "zoe", "password": "hunter2 \\ud800"}}}'
    )
    with client(server) as http:
        response = http.post("/runs", content=body, headers={"content-type": "application/json"})
    problem = assert_problem(response, 400)
    assert problem["detail"].startswith("params['credentials']"), problem
    assert "lone surrogate" in problem["detail"] and "hunter2" not in problem["detail"], problem
    assert run_ids(server) == known
