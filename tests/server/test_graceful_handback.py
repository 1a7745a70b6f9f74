"""Ctrl-C on `steplog serve` hands running runs back; the run's events say so in words."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.conftest import ServerFactory
from tests.support.api import client, start_run, wait_for_status
from tests.support.sse import at_least, read_stream

SETTINGS = {"lease_seconds": 30, "ping_interval": 1, "poll_interval": 0.2}


def test_a_run_handed_back_at_shutdown_says_so(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    directory = tmp_path / "steplog"
    first = server_factory(directory=directory, **SETTINGS)
    run = start_run(first, "ticker", count=30, interval_ms=100)
    read_stream(first.url + run["stream_url"], until=at_least(5))  # mid-step
    assert first.process is not None
    first.process.send_signal(signal.SIGINT)  # Ctrl-C
    assert first.process.wait(timeout=20) == 0

    second = server_factory(directory=directory, **SETTINGS)
    wait_for_status(second, run["run_id"], "succeeded", timeout=30)
    with client(second) as http:
        events = http.get(f"/runs/{run['run_id']}/log", params={"limit": 1000}).json()["events"]
    failed = next(e for e in events if e["type"] == "step.failed")
    assert failed["message"].endswith("failed: the server shut down; the run was handed back")
    assert "cancelled" not in failed["message"]
    retrying = next(e for e in events if e["type"] == "run.retrying")
    assert (
        retrying["message"]
        == "attempt 1 was handed back (its worker shut down); retrying as attempt 2"
    )
    assert retrying["data"]["reason"] == "handed back"
    assert "lease" not in retrying["message"]
