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
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from storage.timefmt import parse_iso
from tests.bench import client as bench_client
from tests.bench.common import (
    HOST,
    Api,
    BenchError,
    Row,
    _auth,
    _error,
    _median_figure,
    _ms,
    _percentile,
    _server,
    envelopes,
)
from tests.support.launcher import ServerProcess, stop_processes
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
    results: list[_Wakeup] = []
    try:
        for rep in range(plan.reps):
            with (
                _server(root, f"wakeup{rep}", processes=1, workers=0) as server,
                _worker(server, root / f"wakeup{rep}" / "worker.log"),
            ):
                results.append(asyncio.run(_measure(server, plan, console)))
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
        stop_processes([worker])


async def _measure(server: ServerProcess, plan: Plan, console: Console) -> _Wakeup:
    commit = await _commit_to_receipt(server, plan.wakeup_ticks)
    trigger = await _trigger_to_first_event(server, plan.wakeup_triggers)
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


async def _commit_to_receipt(server: ServerProcess, ticks: int) -> list[float]:
    """Latencies (sorted) of a ticker run's events, executed by the worker process."""
    async with Api(server) as api:
        run_id = await api.start_ticker(ticks, TICK_MS)
    response = await bench_client.get(HOST, server.port, f"/runs/{run_id}/events", _auth(server))
    latencies: list[float] = []
    try:
        async for received, envelope in envelopes(response):
            if envelope["type"] == "step.progress":
                latencies.append(received - parse_iso(envelope["at"]))
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
        async for _received, envelope in envelopes(response):
            if envelope["type"] == "run.started":
                started[str(envelope["run_id"])] = time.perf_counter()
                arrived.set()

    reader = asyncio.create_task(follow())
    latencies: list[float] = []
    try:
        async with Api(server) as api:
            await api.start_ticker(1, 0)  # a warm-up: connections, first claim
            for _ in range(triggers):
                await asyncio.sleep(random.uniform(0.02, 0.05))  # pacing: an idle worker
                begun = time.perf_counter()
                run_id = await api.start_ticker(1, 0)
                async with asyncio.timeout(10):
                    while run_id not in started:
                        await arrived.wait()
                        arrived.clear()  # then the loop's check: nothing set after is lost
                latencies.append(started[run_id] - begun)
    finally:
        # Hang up first: the reader then ends at the closed connection even should
        # its cancellation be lost to a read completing at the same moment.
        response.close()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
    return sorted(latencies)
