"""`make bench` live fan-out: many subscribers of one emitting stream, steplog beside
nchan, with the same client (`tests.bench.subscribers`; see `tests.bench.run`).

Each repetition measures steplog (a ticker run: commit-to-receipt latency) and then
nchan (a channel a publisher in this process posts to on the same schedule:
publish-to-receipt latency), so the two figures of a repetition are taken in the
same minute on the same machine; the rows give each one's median and their ratio.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from tests.bench import nchan
from tests.bench.common import (
    FINISHED,
    Api,
    BenchError,
    Row,
    _auth,
    _cpu_seconds,
    _error,
    _median_figure,
    _ms,
    _server,
    measure_with,
)
from tests.bench.subscribers import CLIENT_SATURATED, Emitted, FanoutResult, measure
from tests.support.launcher import ServerProcess

if TYPE_CHECKING:
    from tests.bench.run import Plan

LATENCY_TARGET = 0.250
"""steplog's commit-to-receipt p99, in seconds (also with idle streams beside it:
`tests.bench.capacity`)."""
RATIO_TARGET = 2.0
"""steplog's latency may be at most this many times nchan's (p50 and p99)."""


class SteplogSource(AbstractAsyncContextManager["SteplogSource"]):
    """A ticker run on a steplog server; a frame's seq is its `id:` line."""

    label = "steplog"

    def __init__(self, server: ServerProcess, count: int, interval_ms: int) -> None:
        assert server.process is not None, "the server is running"
        self.pid = server.process.pid
        self.port = server.port
        self.headers = _auth(server)
        self.api = Api(server)
        self.count, self.interval_ms = count, interval_ms
        self.run_id = ""

    async def __aexit__(self, *exc: object) -> None:
        await self.api.__aexit__()

    async def start(self) -> str:
        self.run_id = await self.api.start_ticker(self.count, self.interval_ms)
        return f"/runs/{self.run_id}/events"

    async def emitted(self) -> Emitted:
        run = await self.api.run(self.run_id)
        return Emitted(run.last_seq, run.status in FINISHED, run.status == "failed")

    def server_cpu(self) -> float:
        return _cpu_seconds(self.pid)

    def seq_of(self, frame: bytes) -> int | None:
        if not frame.startswith(b"id: "):
            return None
        return int(frame[4 : frame.index(b"\n")])

    def attached(self, frame: bytes) -> bool:
        return frame.startswith(b"retry:")  # sent just before the stream joins the hub


class NchanSource(AbstractAsyncContextManager["NchanSource"]):
    """A channel on nchan, published to from here on the ticker's schedule (tick n at
    n x interval); a frame's seq is the envelope's `"seq"`, the last one `completed`."""

    label = "nchan"

    def __init__(self, server: nchan.NchanServer, count: int, interval_ms: int) -> None:
        self.server = server
        self.port = server.port
        self.headers = nchan.SUBSCRIBE_HEADERS
        self.count, self.interval = count, interval_ms / 1000
        self.channel = f"fanout{time.time_ns()}"
        self.publisher = nchan.Publisher(server.port, self.channel)
        self.last_seq = 0
        self.task: asyncio.Task[None] | None = None

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.publisher.__aexit__()

    async def start(self) -> str:
        await self.publisher.__aenter__()
        self.task = asyncio.create_task(self._publish_all())
        return f"/sub/{self.channel}"

    async def _publish_all(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for seq in range(1, self.count + 1):
            event = "completed" if seq == self.count else "progress"
            body = nchan.envelope(self.channel, seq, self.count, time.time())
            await self.publisher.publish([(event, body)])
            self.last_seq = seq
            await asyncio.sleep(max(0.0, start + seq * self.interval - loop.time()))

    async def emitted(self) -> Emitted:
        """How far publishing got; a publisher that failed fails the measurement."""
        if self.task is None or not self.task.done():
            return Emitted(self.last_seq, finished=False, failed=False)
        problem = self.task.exception()
        if problem is not None:
            raise BenchError(f"publishing to nchan failed: {problem}") from problem
        return Emitted(self.last_seq, finished=True, failed=False)

    def server_cpu(self) -> float:
        return self.server.cpu_seconds()

    def seq_of(self, frame: bytes) -> int | None:
        start = frame.find(b'"seq":')
        if start < 0:
            return None
        return int(frame[start + 6 : frame.index(b",", start)])

    def attached(self, frame: bytes) -> bool:
        return frame.startswith(b": hi")  # nchan's greeting once it has subscribed


def bench_fanout(root: Path, plan: Plan, console: Console) -> list[Row]:
    """N subscribers on one stream of 20 events/s: steplog's latency beside nchan's.

    Besides the latencies, rows keep it honest: whether every subscriber got every
    event, how many failed, the event rate actually reached while fanning out (the
    ticker shares steplog's event loop, so an overloaded server emits more slowly
    and would otherwise be measured under a lighter load than asked for), and the
    bench client's own CPU use (if it saturates a core, the client is measured).
    """
    n = plan.fanout_subscribers
    rate = plan.fanout_rate
    name = f"live fan-out, {n:,} subscribers, {rate:.0f} events/s for {plan.fanout_seconds:.0f} s: "
    results: dict[str, list[FanoutResult]] = {"steplog": [], "nchan": []}
    failures: dict[str, str] = {}
    absent = nchan.missing()
    if absent is not None:
        console.log(f"[yellow]fan-out: {absent}; {nchan.HINT}")
        failures["nchan"] = f"not measured: {absent}"
    for rep in range(plan.reps):
        if "steplog" not in failures:
            try:
                with _server(root, f"fanout{rep}", workers=2) as server:
                    source = SteplogSource(server, plan.fanout_count, plan.fanout_interval_ms)
                    results["steplog"].append(measure_with(measure_source(source, plan, console)))
            except Exception as exc:
                failures["steplog"] = _error(console, "fan-out (steplog)", exc)
        if "nchan" not in failures:
            try:
                with nchan.running(root / f"nchan-fanout{rep}") as peer:
                    source_n = NchanSource(peer, plan.fanout_count, plan.fanout_interval_ms)
                    results["nchan"].append(measure_with(measure_source(source_n, plan, console)))
            except Exception as exc:
                failures["nchan"] = _error(console, "fan-out (nchan)", exc)
    return _rows(name, rate, results, failures, peer_absent=absent is not None, subscribers=n)


async def measure_source(
    source: SteplogSource | NchanSource, plan: Plan, console: Console
) -> FanoutResult:
    """The plan's fan-out on `source`, which is closed afterwards."""
    async with source:
        return await measure(source, plan.fanout_subscribers, plan.fanout_seconds, console)


def _rows(
    name: str,
    rate: float,
    results: dict[str, list[FanoutResult]],
    failures: dict[str, str],
    *,
    peer_absent: bool,
    subscribers: int,
) -> list[Row]:
    """The table's rows: each server's figures, then the two side by side.

    `failures` holds why a server has no figures; a peer that is not installed
    (`peer_absent`) says so in its cells but fails no target: steplog's are judged alone.
    """
    failed = bool(failures) and not (peer_absent and failures.keys() == {"nchan"})

    def figure(label: str, value: Callable[[FanoutResult], float]) -> str:
        if label in failures:
            return failures[label]
        return _median_figure([value(r) for r in results[label]], _ms)

    def median(label: str, value: Callable[[FanoutResult], float]) -> float | None:
        if label in failures or not results[label]:
            return None
        return statistics.median(value(r) for r in results[label])

    def both(describe: Callable[[list[FanoutResult]], str]) -> str:
        return ", ".join(
            f"{label} {failures.get(label) or describe(results[label])}" for label in results
        )

    steplog_p99 = median("steplog", _p99)
    rows = [
        Row(name + "steplog commit-to-receipt p50", figure("steplog", _p50)),
        Row(
            name + "steplog commit-to-receipt p99",
            figure("steplog", _p99),
            f"< {_ms(LATENCY_TARGET)}",
            None if steplog_p99 is None else steplog_p99 < LATENCY_TARGET,
        ),
        Row(name + "nchan publish-to-receipt p50", figure("nchan", _p50)),
        Row(name + "nchan publish-to-receipt p99", figure("nchan", _p99)),
    ]
    for pct, value in (("p50", _p50), ("p99", _p99)):
        ours, theirs = median("steplog", value), median("nchan", value)
        row = Row(f"{name}{pct} steplog / nchan", "not measured", f"≤ {RATIO_TARGET:.0f}x")
        row.met = None if peer_absent else False
        if peer_absent:
            row.figure = failures["nchan"]
        elif ours is not None and theirs:
            row.figure, row.met = f"{ours / theirs:.1f}x", ours / theirs <= RATIO_TARGET
        rows.append(row)
    measured = [r for label, runs in results.items() if label not in failures for r in runs]
    rows += [
        Row(
            name + "every event to every subscriber",
            both(lambda runs: "yes" if all(r.complete for r in runs) else _incomplete(runs)),
            "yes, both",
            bool(measured) and all(r.complete for r in measured) and not failed,
        ),
        Row(
            name + "subscriber errors",
            both(lambda runs: f"{sum(r.errors for r in runs):,}"),
            "0, both",
            bool(measured) and not any(r.errors for r in measured) and not failed,
        ),
        Row(
            name + "event rate reached while fanning out",
            both(lambda runs: f"{statistics.median(r.emitted_per_s for r in runs):,.1f}/s"),
            f"≥ {rate * 0.9:.0f}/s",  # the emitter's sleep adds drift
            bool(measured)
            and not failed
            and all(  # each server's median, the figure shown
                statistics.median(r.emitted_per_s for r in runs) >= rate * 0.9
                for label, runs in results.items()
                if label not in failures
            ),
        ),
        Row(
            name + "bench client CPU (share of one core) while fanning out",
            both(lambda runs: _client_cpu(runs, subscribers)),
            f"< {CLIENT_SATURATED:.0%} (the client is not the bottleneck)",
            bool(measured)
            and all(r.client_cpu < CLIENT_SATURATED for r in measured)
            and not failed,
        ),
    ]
    return rows


def _p50(result: FanoutResult) -> float:
    return result.p50


def _p99(result: FanoutResult) -> float:
    return result.p99


def _incomplete(runs: list[FanoutResult]) -> str:
    return f"no ({sum(not r.complete for r in runs)} of {len(runs)} runs)"


def _client_cpu(runs: list[FanoutResult], subscribers: int) -> str:
    """Median share of a core (and the worst), and CPU per delivery: per event, the
    client reads every subscriber in turn, so the last one waits that times N (the
    client's own floor under the p99, about half of it under the p50)."""
    peak = max(r.client_cpu for r in runs)
    per_delivery = statistics.median(r.client_per_delivery for r in runs)
    figure = (
        f"{statistics.median(r.client_cpu for r in runs):.0%} (max {peak:.0%};"
        f" {per_delivery * 1e6:.0f} µs per delivery, {_ms(per_delivery * subscribers)}"
        " per event for all)"
    )
    return figure + (" — saturated, the client is measured" if peak >= CLIENT_SATURATED else "")
