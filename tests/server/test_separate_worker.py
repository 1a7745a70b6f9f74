"""A run executed by a separate `steplog worker` process reaches the server's streams.

The server has no workers of its own; the worker process appends to the same
SQLite file, and the server's tail hub picks those commits up with its one
cheap poll per process, not one per subscriber.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import ServerFactory
from tests.support.sse import read_stream, until_terminal


def test_events_from_another_process_reach_the_stream(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(workers=0, poll_interval=0.1, ping_interval=1)
    worker_log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "stream", "worker", "--db", str(server.db), "--workers", "2"],
        env={**server.env, "STEPLOG_POLL_INTERVAL": "0.1"},
        stdout=worker_log,
        stderr=subprocess.STDOUT,
    )
    try:
        started = httpx.post(
            f"{server.url}/runs",
            headers=server.headers,
            json={"function": "ticker", "params": {"count": 15, "interval_ms": 20}},
        )
        assert started.status_code == 202
        run_id = started.json()["run_id"]
        stream = read_stream(
            f"{server.url}/runs/{run_id}/events",
            headers=server.headers,
            until=until_terminal,
            timeout=20,
        )
        assert stream.status == 200
        envelopes = stream.envelopes
        assert [e["seq"] for e in envelopes] == list(range(1, len(envelopes) + 1))
        assert envelopes[-1]["type"] == "run.succeeded"
        assert envelopes[1]["data"]["worker"] != ""  # run.started names the worker process
        ticks = [e for e in envelopes if e["type"] == "step.progress"]
        assert len(ticks) == 15
    finally:
        worker.terminate()
        worker.wait(timeout=15)
        worker_log.close()
    # The worker logs the transitions of the runs it executed, like `serve` does.
    said = (tmp_path / "worker.log").read_text()
    assert f"run {run_id} running" in said and f"run {run_id} succeeded" in said, said
