"""`make bench` replay, nchan's side: a 100,000-message channel read from its oldest
message by one EventSource client, beside steplog's replay of a finished run.

The channel is filled first (pipelined publishes, untimed), then read with the same
raw-socket client and event counting as steplog's replay (`bench_client.get` and
`count_events`). nchan keeps the stream open after the last message, so a read
ends once every message has arrived; its time runs from the request to then.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from tests.bench import client as bench_client
from tests.bench import nchan
from tests.bench.common import (
    HOST,
    BenchError,
    Row,
    _error,
    _median_figure,
    _rate,
    measure_with,
)

if TYPE_CHECKING:
    from tests.bench.run import Plan

RATIO_TARGET = 30.0
"""steplog's replay rate should be at least this many times nchan's."""
PUBLISH_BATCH = 500
"""Messages per pipelined write while filling the channel."""


def bench_nchan_replay(
    root: Path, plan: Plan, console: Console, steplog_rates: list[float]
) -> list[Row]:
    """nchan's replay rate and steplog's (`steplog_rates`, measured just before) over it."""
    n = plan.replay_events
    name = f"replay of a finished {n:,}-message channel to 1 client, nchan (peer)"
    ratio = Row(
        f"replay of {n:,} events: steplog / nchan", "not measured", f"≥ {RATIO_TARGET:.0f}x"
    )
    absent = nchan.missing()
    if absent is not None:
        console.log(f"[yellow]replay: {absent}; {nchan.HINT}")
        ratio.figure = f"not measured: {absent}"
        return [Row(name, f"not measured: {absent}"), ratio]
    try:
        with nchan.running(root / "nchan-replay", buffer=n) as server:
            channel = f"replay{time.time_ns()}"
            asyncio.run(_fill(server, channel, n, console))
            rates = [
                measure_with(_replay_once(server, channel, n, console)) for _ in range(plan.reps)
            ]
    except Exception as exc:
        message = _error(console, "replay (nchan)", exc)
        ratio.met = False
        return [Row(name, message), ratio]
    theirs = statistics.median(rates)
    if steplog_rates:
        ours = statistics.median(steplog_rates)
        ratio.figure, ratio.met = f"{ours / theirs:.1f}x", ours / theirs >= RATIO_TARGET
    else:
        ratio.met = False
    return [Row(name, _median_figure(rates, _rate)), ratio]


async def _fill(server: nchan.NchanServer, channel: str, n: int, console: Console) -> None:
    """Publish `n` steplog-sized messages, the last one `completed` (like a run's end)."""
    console.log(f"replay (nchan): publishing {n:,} messages")
    started = time.perf_counter()
    at = time.time()
    async with nchan.Publisher(server.port, channel) as publisher:
        for first in range(1, n + 1, PUBLISH_BATCH):
            await publisher.publish(
                [
                    ("completed" if seq == n else "progress", nchan.envelope(channel, seq, n, at))
                    for seq in range(first, min(n, first + PUBLISH_BATCH - 1) + 1)
                ]
            )
    console.log(f"replay (nchan): published in {time.perf_counter() - started:.1f} s")


async def _replay_once(server: nchan.NchanServer, channel: str, n: int, console: Console) -> float:
    """Read the channel from its oldest message until all `n` arrived; events per second."""
    cpu, server_cpu = time.process_time(), server.cpu_seconds()
    started = time.perf_counter()
    response = await bench_client.get(HOST, server.port, f"/sub/{channel}", nchan.SUBSCRIBE_HEADERS)
    try:
        if response.status != 200:
            raise BenchError(f"GET /sub/{channel} answered {response.status}")
        events, size, tail = await asyncio.wait_for(
            bench_client.count_events(response, stop_after=n), 900
        )
        seconds = time.perf_counter() - started
    finally:
        response.close()
    last_frame = tail.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    if events != n or f'"seq":{n},'.encode() not in last_frame:
        raise BenchError(f"nchan's replay delivered {events} of {n} messages")
    cpu, server_cpu = time.process_time() - cpu, server.cpu_seconds() - server_cpu
    console.log(
        f"replay (nchan): {events:,} messages ({size / events:.0f} bytes each) in"
        f" {seconds:.2f} s = {_rate(events / seconds)}; client CPU {cpu / seconds:.0%},"
        f" nchan CPU {server_cpu / seconds:.0%}"
    )
    return events / seconds
