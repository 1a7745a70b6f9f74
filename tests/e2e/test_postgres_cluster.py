"""Two `steplog serve` and two `steplog worker` processes on one PostgreSQL log, behind nginx.

Issue 7's deployment test: the API instances and the workers share nothing but
the database, and nginx (`infra/nginx.conf`, its upstream templated with both
serve instances) spreads clients over them. A client streams one run through
nginx while the serve instance holding its stream and then the worker running
the run are killed with SIGKILL (a crash, no clean-up). The client must resume
through the other instance with `Last-Event-ID` and see every event exactly
once, in order; the run must be taken over by the other worker once its lease
expires (attempt 2) and complete.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.e2e.conftest import NginxFactory
from tests.support.launcher import ROOT, ServerProcess, stop_processes
from tests.support.probes import metric
from tests.support.sse import Follower, assert_contiguous
from tests.support.wait import wait_until

API_KEY = "slk_test_postgres_cluster"
WEBHOOK_SECRET = "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
HEADERS = {"Authorization": f"Bearer {API_KEY}"}
LEASE_SECONDS = 2
"""Short, so the killed worker's run is free again soon and the test stays quick."""


@pytest.fixture
def workers(tmp_path: Path, pg_url: str) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Start `steplog worker` processes on the test schema; all stopped afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def spawn(name: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "STEPLOG_API_KEY": API_KEY,
            "STEPLOG_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STEPLOG_LEASE_SECONDS": str(LEASE_SECONDS),
            "STEPLOG_POLL_INTERVAL": "0.1",
            "PYTHONUNBUFFERED": "1",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream", "worker", "--db", pg_url],
            cwd=ROOT,
            env=env,
            stdout=(tmp_path / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        started.append(proc)
        return proc

    yield spawn
    stop_processes(started)


def streams_open(server: ServerProcess) -> float:
    """The instance's open SSE responses (0 once it is dead)."""
    try:
        return metric(server.url, "steplog_open_streams")
    except httpx.TransportError:
        return 0.0


def test_a_stream_and_a_run_survive_a_serve_and_a_worker_killed(
    pg_url: str,
    server_factory: ServerFactory,
    nginx_factory: NginxFactory,
    workers: Callable[[str], subprocess.Popen[bytes]],
) -> None:
    # Started one after the other, so the first one's migration is done before the next.
    serves = [
        server_factory(db=pg_url, workers=0, api_key=API_KEY, webhook_secret=WEBHOOK_SECRET)
        for _ in range(2)
    ]
    worker_procs = {proc.pid: proc for proc in (workers("worker0"), workers("worker1"))}
    proxy = nginx_factory([s.port for s in serves])

    started = httpx.post(
        f"{proxy.url}/runs",
        headers=HEADERS,
        json={"function": "ticker", "params": {"count": 60, "interval_ms": 100}},
        timeout=10,
    )
    assert started.status_code == 202, started.text
    run = started.json()
    client = Follower(
        proxy.url + run["stream_url"], headers=HEADERS, deadline=35, read_timeout=20
    ).start()

    # The instance holding the stream is the one with an open SSE response (nothing
    # else streams); kill it once some events went through it.
    def holder() -> ServerProcess | None:
        holding = [s for s in serves if streams_open(s) >= 1]
        return holding[0] if len(holding) == 1 and len(client.events) >= 5 else None

    victim = wait_until(
        holder, 15, what=f"the stream to be open on one instance: {client.summary()}"
    )
    survivor = next(s for s in serves if s is not victim)
    received_before = len(client.events)
    victim.kill()
    wait_until(
        lambda: len(client.connections) >= 2 and len(client.events) > received_before + 2,
        15,
        what=f"the client to resume through the other instance: {client.summary()}",
    )
    assert streams_open(survivor) >= 1, "the resumed stream should be on the surviving instance"

    # The worker running the run names itself in run.started: host:pid:random.
    first_start = next(e for e in client.envelopes if e["type"] == "run.started")
    pid = int(first_start["data"]["worker"].split(":")[1])
    assert pid in worker_procs, f"run.started names {first_start['data']['worker']}"
    status = httpx.get(f"{survivor.url}/runs/{run['run_id']}", headers=HEADERS).json()["status"]
    assert status == "running", "the run must still be going when its worker is killed"
    worker_procs[pid].send_signal(signal.SIGKILL)
    worker_procs[pid].wait(timeout=10)

    client.join(40)
    envelopes = client.envelopes
    assert_contiguous(envelopes)  # every event exactly once, in order, across both kills
    assert [e.id for e in client.events] == [str(e["seq"]) for e in envelopes]
    assert envelopes[-1]["type"] == "run.succeeded", envelopes[-1]
    starts = [e for e in envelopes if e["type"] == "run.started"]
    assert len(starts) == 2, [e["data"] for e in starts]
    other = int(starts[1]["data"]["worker"].split(":")[1])
    assert other != pid and other in worker_procs and worker_procs[other].poll() is None
    final = httpx.get(f"{survivor.url}/runs/{run['run_id']}", headers=HEADERS).json()
    assert final["status"] == "succeeded" and final["last_seq"] == envelopes[-1]["seq"]
    assert final["attempt"] == 2, final

    # nginx names both instances in its log: the first response went to the victim.
    log = proxy.access_log_once_it_has(f"upstream=127.0.0.1:{survivor.port}")
    assert f"upstream=127.0.0.1:{survivor.port}" in log, log
