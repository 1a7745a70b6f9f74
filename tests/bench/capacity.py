"""`make bench` capacity: 10,000 idle open streams on one instance while 1,000 more
follow a live run (see `tests.bench.run`).

What a busy deployment looks like: most viewers sit on runs that are quiet (a page
left open, a dashboard on a queued run), each stream costing a socket, memory and
a ping every 15 s, while a few runs are live. The rows say whether the instance
holds every idle stream, what each costs in memory at that scale, and what the live
fan-out's latency is with all of them open beside it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from rich.console import Console

from tests.bench.common import (
    Api,
    Row,
    _error,
    _kib,
    _ms,
    _server,
    measure_with,
)
from tests.bench.fanout import LATENCY_TARGET, SteplogSource, measure_source
from tests.bench.idle import WARMUP, IdleStreams, settled_rss
from tests.bench.subscribers import FanoutResult
from tests.support.launcher import ServerProcess
from tests.support.probes import metric

if TYPE_CHECKING:
    from pathlib import Path

    from tests.bench.run import Plan

MEMORY_TARGET = 32 * 1024
"""Bytes of server memory per idle open stream, at 10,000 of them."""


def bench_capacity(root: Path, plan: Plan, console: Console) -> list[Row]:
    """Idle streams held, memory per idle stream and live fan-out latency beside them."""
    idle, live = plan.capacity_idle, plan.fanout_subscribers
    rate = plan.fanout_rate
    name = f"{idle:,} idle streams open on one instance"
    rows = [
        Row(f"{name}: streams held", "", f"{idle:,}"),
        Row(f"{name}: server memory per idle stream", "", f"< {_kib(MEMORY_TARGET)}"),
        Row(
            f"{name}, plus {live:,} live subscribers at {rate:.0f} events/s: p50 / p99",
            "",
            f"p99 < {_ms(LATENCY_TARGET)}",
        ),
        Row(f"{name}, plus {live:,} live subscribers: every event to every subscriber", "", "yes"),
    ]
    try:
        # Room for both groups under the server-wide cap (default 10,000).
        cap = idle + live + 2 * WARMUP
        with _server(root, "capacity", workers=3, max_streams=cap) as server:
            held, per_stream, result = measure_with(_capacity_once(server, plan, console))
    except Exception as exc:
        message = _error(console, "capacity", exc)
        for row in rows:
            row.figure, row.met = message, False
        return rows
    rows[0].figure, rows[0].met = f"{held:,}", held >= idle
    rows[1].figure, rows[1].met = _kib(per_stream), per_stream < MEMORY_TARGET
    rows[2].figure = f"{_ms(result.p50)} / {_ms(result.p99)}"
    rows[2].met = result.p99 < LATENCY_TARGET
    rows[3].figure, rows[3].met = ("yes" if result.complete else "no"), result.complete
    return rows


async def _capacity_once(
    server: ServerProcess, plan: Plan, console: Console
) -> tuple[int, float, FanoutResult]:
    """Open the idle streams (weighing them), then measure a live fan-out beside them."""
    assert server.process is not None
    pid = server.process.pid
    async with Api(server) as api:
        # Claimed by a worker, it sends its first tick and then waits an hour: quiet.
        quiet_run = await api.start_ticker(2, 3_600_000)
    async with IdleStreams(server, f"/runs/{quiet_run}/events") as streams:
        await streams.open(WARMUP)
        before = await settled_rss(pid, 2.0)
        started = time.perf_counter()
        await streams.open(plan.capacity_idle)
        elapsed = time.perf_counter() - started
        after = await settled_rss(pid, 2.0)
        per_stream = (after - before) / plan.capacity_idle
        console.log(
            f"capacity: {plan.capacity_idle:,} idle streams opened in {elapsed:.1f} s,"
            f" {_kib(per_stream)} each"
        )
        held_before = await _open_streams(server)
        source = SteplogSource(server, plan.fanout_count, plan.fanout_interval_ms)
        result = await measure_source(source, plan, console)
        # Every idle stream still open after the fan-out (closing live ones only add).
        held = min(held_before, await _open_streams(server)) - WARMUP
    return held, per_stream, result


async def _open_streams(server: ServerProcess) -> int:
    """The server's own count of open streams (`steplog_open_streams` in /metrics)."""
    return int(await asyncio.to_thread(metric, server.url, "steplog_open_streams"))
