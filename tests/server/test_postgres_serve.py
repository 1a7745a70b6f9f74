"""`steplog serve` and `steplog worker` as separate processes on one PostgreSQL log.

The server runs no workers and its tail hub never polls (an hour apart), so a
run that streams live to the end proves the worker's commits reached the
server through the PostgreSQL log's commit watcher (LISTEN/NOTIFY, with its own
slow head check as the safety net; `test_postgres_ordering` shows NOTIFY alone
suffices).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.launcher import ROOT, free_port, stop_processes
from tests.support.sse import Follower
from tests.support.wait import wait_until

API_KEY = "slk_test_postgres"
WEBHOOK_SECRET = "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    stop_processes(started)


def spawn(
    processes: list[subprocess.Popen[bytes]], log: Path, *args: str, **env: str
) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "STEPLOG_API_KEY": API_KEY,
        "STEPLOG_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream", *args],
        cwd=ROOT,
        env=environment,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    processes.append(proc)
    return proc


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(healthy, 20, what=f"steplog serve to start: {log}")


def test_a_worker_process_streams_through_a_serve_process(
    pg_url: str, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    migrated = subprocess.run(
        [sys.executable, "-m", "stream", "migrate", "--db", pg_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_log = tmp_path / "serve.log"
    server = spawn(
        processes, server_log, "serve", "--port", str(port), "--db", pg_url, "--workers", "0",
        STEPLOG_TAIL_POLL_INTERVAL="3600",
    )  # fmt: skip
    wait_healthy(url, server, server_log)
    spawn(processes, tmp_path / "worker.log", "worker", "--db", pg_url, STEPLOG_POLL_INTERVAL="0.1")

    headers = {"Authorization": f"Bearer {API_KEY}"}
    started = httpx.post(
        f"{url}/runs",
        headers=headers,
        json={"function": "ticker", "params": {"count": 25, "interval_ms": 100}},
    )
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    stream = Follower(f"{url}/runs/{run_id}/events", headers=headers, deadline=30).start()
    wait_until(lambda: stream.connections, 10, what="the stream to open")
    status = httpx.get(f"{url}/runs/{run_id}", headers=headers).json()["status"]
    assert status in ("queued", "running"), "the run must still be going to stream live"
    stream.join(30)
    assert [c.status for c in stream.connections] == [200], stream.summary()
    received = stream.events
    envelopes = [json.loads(e.data) for e in received]
    assert [e["seq"] for e in envelopes] == list(range(1, len(envelopes) + 1))
    assert [e.id for e in received] == [str(e["seq"]) for e in envelopes]
    assert envelopes[-1]["type"] == "run.succeeded"
    assert len([e for e in envelopes if e["type"] == "step.progress"]) == 25
    run = httpx.get(f"{url}/runs/{run_id}", headers=headers).json()
    assert run["status"] == "succeeded" and run["last_seq"] == envelopes[-1]["seq"]
