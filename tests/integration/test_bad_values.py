"""Values the log cannot take as they are, end to end on a real server.

A lone surrogate fails only the call that passed it, never the other runs whose
events share its group commit.
"""

from __future__ import annotations

import json
import os
import threading
from types import TracebackType
from typing import Any

import pytest

from stream.launcher import ServerProcess
from stream.sse_parser import ParsedEvent, SSEParser
from tests.conftest import ServerFactory
from tests.integration.helpers import (
    ROOT,
    assert_contiguous,
    http_client,
    read_stream,
    start_run,
    wait_for_status,
)

MODULE = "tests.integration.value_functions"
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
