"""Wake-ups across processes: how soon a commit in one process reaches another's streams.

A server with no workers of its own (`--processes 1 --workers 0`) and a `steplog
worker` process on the same SQLite file, the setup where every event a stream
carries was committed by another process:

1. commit-to-receipt across processes: a `ticker` run executed by the worker, one
   event every 20 ms, read on the server's run stream; each event's latency is its
   receipt time minus its `at` (taken by the worker's writer as the transaction
   begins, so the commit itself counts). Without the doorbell this is the tail's
   poll (`STEPLOG_TAIL_POLL_INTERVAL`, 50 ms).
2. trigger to first event at the client: `POST /runs` (one keep-alive connection) to
   the arrival of that run's `run.started` on a `GET /events` stream opened
   beforehand. The worker must hear of the run (its idle slots poll every 0.5 s
   without the doorbell), claim it and commit `run.started`, and the server must
   hear of that commit. Triggers are spaced out, so each finds the worker idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from rich.console import Console

from tests.bench import client as bench_client
from tests.bench.common import (
    HOST,
    BenchError,
    Row,
    _auth,
    _error,
    _median_figure,
    _ms,
    _percentile,
    _server,
)
from tests.support.launcher import ServerProcess
from tests.support.wait import wait_until

if TYPE_CHECKING:
    from tests.bench.run import Plan

TICK_MS = 20


@dataclass(slots=True)
class _Wakeup:
    commit_p50: float
    commit_p99: float
    trigger_p50: float
    trigger_p99: float


def bench_wakeup(root: Path, plan: Plan, console: Console) -> list[Row]:
    """The rows of this group (see the module docstring), each the median of `plan.reps`."""
    where = "separate `steplog worker` → server stream"
    rows = [
        Row(f"wake-up across processes ({where}): commit-to-receipt p50", ""),
        Row(f"wake-up across processes ({where}): commit-to-receipt p99", "", "< 5 ms"),
        Row(f"trigger → first event at the client ({where}): p50", ""),
        Row(f"trigger → first event at the client ({where}): p99", "", "< 20 ms"),
    ]
    ticks = 100 if plan.reps == 1 else 400
    triggers = 50 if plan.reps == 1 else 200
    results: list[_Wakeup] = []
    try:
        for rep in range(plan.reps):
            with (
                _server(root, f"wakeup{rep}", processes=1, workers=0) as server,
                _worker(server, root / f"wakeup{rep}" / "worker.log"),
            ):
                results.append(asyncio.run(_measure(server, ticks, triggers, console)))
    except Exception as exc:
        message = _error(console, "wake-up", exc)
        for row in rows:
            row.figure, row.met = message, False
        return rows
    figures = [
        [r.commit_p50 for r in results],
        [r.commit_p99 for r in results],
        [r.trigger_p50 for r in results],
        [r.trigger_p99 for r in results],
    ]
    for row, values in zip(rows, figures, strict=True):
        row.figure = _median_figure(values, _ms_fine)
    rows[1].met = statistics.median(figures[1]) < 0.005
    rows[3].met = statistics.median(figures[3]) < 0.020
    return rows


def _ms_fine(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 0.1 else _ms(value)


@contextlib.contextmanager
def _worker(server: ServerProcess, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`steplog worker` on the server's database, stopped on the way out."""
    with log_path.open("ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "stream", "worker", "--db", str(server.db), "--workers", "4"],
            env=server.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "steplog worker" in log_path.read_text(), 30, what="the worker")
        yield worker
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


async def _measure(server: ServerProcess, ticks: int, triggers: int, console: Console) -> _Wakeup:
    commit = await _commit_to_receipt(server, ticks)
    trigger = await _trigger_to_first_event(server, triggers)
    result = _Wakeup(
        statistics.median(commit),
        _percentile(commit, 0.99),
        statistics.median(trigger),
        _percentile(trigger, 0.99),
    )
    console.log(
        f"wake-up: commit-to-receipt p50 {_ms_fine(result.commit_p50)}, p99 "
        f"{_ms_fine(result.commit_p99)}; trigger → first event p50 "
        f"{_ms_fine(result.trigger_p50)}, p99 {_ms_fine(result.trigger_p99)}"
    )
    return result


async def _frames(
    response: bench_client.Response,
) -> AsyncIterator[tuple[float, dict[str, object]]]:
    """Each event's envelope with its receipt time (wall clock), as frames arrive."""
    buffer = b""
    while (body := await asyncio.wait_for(response.read(), 30)) is not None:
        received = time.time()
        buffer += body
        *frames, buffer = buffer.split(b"\n\n")
        for frame in frames:
            for line in frame.split(b"\n"):
                if line.startswith(b"data: "):
                    yield received, json.loads(line[6:])


async def _commit_to_receipt(server: ServerProcess, ticks: int) -> list[float]:
    """Latencies (sorted) of a ticker run's events, executed by the worker process."""
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers) as http:
        answer = await http.post(
            "/runs",
            json={"function": "ticker", "params": {"count": ticks, "interval_ms": TICK_MS}},
        )
        if answer.status_code != 202:
            raise BenchError(f"POST /runs answered {answer.status_code}: {answer.text}")
        run_id = answer.json()["run_id"]
    response = await bench_client.get(HOST, server.port, f"/runs/{run_id}/events", _auth(server))
    latencies: list[float] = []
    try:
        async for received, envelope in _frames(response):
            if envelope["type"] == "step.progress":
                at = str(envelope["at"]).replace("Z", "+00:00")
                latencies.append(received - datetime.fromisoformat(at).timestamp())
            if envelope["type"] in ("run.succeeded", "run.failed", "run.cancelled"):
                break
    finally:
        response.close()
    if len(latencies) < ticks:
        raise BenchError(f"got {len(latencies)} of {ticks} ticks")
    return sorted(latencies)


async def _trigger_to_first_event(server: ServerProcess, triggers: int) -> list[float]:
    """Seconds (sorted) from each `POST /runs` to its `run.started` on the global stream."""
    started: dict[str, float] = {}
    arrived = asyncio.Event()
    response = await bench_client.get(HOST, server.port, "/events", _auth(server))

    async def follow() -> None:
        async for _received, envelope in _frames(response):
            if envelope["type"] == "run.started":
                started[str(envelope["run_id"])] = time.perf_counter()
                arrived.set()

    reader = asyncio.create_task(follow())
    latencies: list[float] = []
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers) as http:
            body = {"function": "ticker", "params": {"count": 1, "interval_ms": 0}}
            await http.post("/runs", json=body)  # a warm-up: connections, first claim
            for _ in range(triggers):
                await asyncio.sleep(random.uniform(0.02, 0.05))  # pacing: an idle worker
                begun = time.perf_counter()
                answer = await http.post("/runs", json=body)
                run_id = answer.json()["run_id"]
                async with asyncio.timeout(10):
                    while run_id not in started:
                        await arrived.wait()
                        arrived.clear()  # then the loop's check: nothing set after is lost
                latencies.append(started[run_id] - begun)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        response.close()
    return sorted(latencies)
