"""`make bench` live fan-out: many subscribers of one emitting run, commit-to-receipt
latency and completeness (see `tests.bench.run`)."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from storage.timefmt import parse_iso
from tests.bench import client as bench_client
from tests.bench.common import (
    CONNECT_CONCURRENCY,
    FINISHED,
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
)
from tests.support.launcher import ServerProcess

if TYPE_CHECKING:
    from tests.bench.run import Plan

# -- 3. live fan-out --------------------------------------------------------------------


@dataclass(slots=True)
class _FanoutState:
    """What all subscribers of one measurement share."""

    live_from: float | None = None
    """Epoch seconds after which every subscriber was attached: only events committed
    from then on count for latency (earlier ones may have come by replay)."""
    at_cache: dict[int, float] = field(default_factory=dict)
    """seq -> commit time: every subscriber sees the same events, parse each `at` once."""
    latencies: list[tuple[int, float]] = field(default_factory=list)
    """(seq, receipt - commit) for every live delivery."""
    connected: int = 0
    all_connected: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 0
    cut: int | None = None
    """When the run outlives the measurement: the last seq every subscriber must get."""
    caught_up: int = 0
    all_caught_up: asyncio.Event = field(default_factory=asyncio.Event)

    def catch_up(self, sub: _Subscriber) -> None:
        """Count `sub` once it has everything up to the cut (or has given up)."""
        if self.cut is None or sub.caught_up:
            return
        if sub.next_seq > self.cut or sub.problem is not None:
            sub.caught_up = True
            self.caught_up += 1
            if self.caught_up >= self.expected:
                self.all_caught_up.set()


@dataclass(slots=True)
class _Subscriber:
    next_seq: int = 1
    done: bool = False
    problem: str | None = None
    caught_up: bool = False


@dataclass(slots=True)
class _FanoutResult:
    p99: float
    emitted_per_s: float
    complete: bool


def bench_fanout(root: Path, plan: Plan, console: Console) -> list[Row]:
    """N subscribers on one run emitting 20 events/s: p99 commit-to-receipt latency.

    Besides the latency, two rows keep it honest: whether every subscriber got every
    event, and the event rate the run actually reached while fanning out (the emitter
    shares the server's event loop, so an overloaded server emits more slowly and the
    latency would otherwise be measured under a lighter load than asked for).
    """
    n = plan.fanout_subscribers
    rate = 1000 / plan.fanout_interval_ms
    seconds = plan.fanout_count * plan.fanout_interval_ms / 1000
    name = f"live fan-out, {n:,} subscribers, {rate:.0f} events/s for {seconds:.0f} s: "
    rows = [
        Row(name + "commit-to-receipt p99", "", "< 250 ms"),
        Row(name + "every event to every subscriber", "", "yes"),
        Row(name + "event rate reached while fanning out", "", f"≥ {rate * 0.9:.0f}/s"),
    ]
    results: list[_FanoutResult] = []
    try:
        for rep in range(plan.reps):
            with _server(root, f"fanout{rep}", workers=2) as server:
                results.append(asyncio.run(_fanout_once(server, plan, console)))
    except Exception as exc:
        message = _error(console, "fan-out", exc)
        for row in rows:
            row.figure, row.met = message, False
        return rows
    p99s = [r.p99 for r in results]
    rows[0].figure = _median_figure(p99s, _ms)
    rows[0].met = statistics.median(p99s) < 0.250
    failed = sum(not r.complete for r in results)
    rows[1].figure = "yes" if not failed else f"no ({failed} of {len(results)} runs)"
    rows[1].met = not failed
    rates = [r.emitted_per_s for r in results]
    rows[2].figure = _median_figure(rates, lambda v: f"{v:,.1f}/s")
    rows[2].met = statistics.median(rates) >= rate * 0.9  # the ticker's sleep adds drift
    return rows


async def _fanout_once(server: ServerProcess, plan: Plan, console: Console) -> _FanoutResult:
    """One measurement on a fresh server.

    The run starts as soon as it is created, so subscribers attach from seq 0 while it
    runs, get its first events by replay, and latency counts only what was committed
    after all of them were attached. If the server cannot keep the asked-for rate,
    the measurement stops at 1.2 x the nominal duration: it then checks every event
    committed so far reached every subscriber, instead of waiting for the run's end.
    """
    n = plan.fanout_subscribers
    state = _FanoutState(expected=n)
    subscribers = [_Subscriber() for _ in range(n)]
    connect = asyncio.Semaphore(CONNECT_CONCURRENCY)
    nominal = plan.fanout_count * plan.fanout_interval_ms / 1000
    async with Api(server) as api:
        run_id = await api.start_ticker(plan.fanout_count, plan.fanout_interval_ms)
        path = f"/runs/{run_id}/events"
        tasks = [
            asyncio.create_task(_subscribe(server, path, state, sub, connect))
            for sub in subscribers
        ]
        try:
            started = time.perf_counter()
            try:
                await asyncio.wait_for(state.all_connected.wait(), 120)
            except TimeoutError:
                raise BenchError(f"only {state.connected} of {n} subscribers attached") from None
            # The retry line comes just before a stream subscribes to the hub: give the
            # last ones a moment to finish their catch-up read.
            live_from = state.live_from = time.time() + 0.2
            console.log(
                f"fan-out: {n:,} subscribers attached in {time.perf_counter() - started:.1f} s"
            )
            _done, pending = await asyncio.wait(tasks, timeout=nominal * 1.2 + 2)
            run = await api.run(run_id)
            cut = run.last_seq  # every subscriber must get at least this far
            if pending:
                console.log(f"fan-out: run not finished in time, checking up to seq {cut}")
                state.cut = cut
                for sub in subscribers:
                    state.catch_up(sub)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(state.all_caught_up.wait(), 15)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    latencies = sorted(latency for seq, latency in state.latencies if seq <= cut)
    if not latencies:
        raise BenchError("no event was committed after all subscribers attached")
    p99 = _percentile(latencies, 0.99)
    live_ats = sorted(at for seq, at in state.at_cache.items() if at >= live_from and seq <= cut)
    span = live_ats[-1] - live_ats[0] if len(live_ats) > 1 else 0.0
    emitted = (len(live_ats) - 1) / span if span > 0 else 0.0
    problems = [s.problem for s in subscribers if s.problem]
    short = sum(s.next_seq <= cut for s in subscribers)
    unfinished = sum(not s.done for s in subscribers) if run.status in FINISHED else 0
    complete = run.status != "failed" and not problems and not short and not unfinished
    console.log(
        f"fan-out: p50 {_ms(_percentile(latencies, 0.5))}, p99 {_ms(p99)}, max"
        f" {_ms(latencies[-1])} over {len(latencies):,} live deliveries; run emitted"
        f" {emitted:.1f} events/s; complete: {complete}"
        + (f" (first problem: {problems[0]})" if problems else "")
        + (f" ({short} short, {unfinished} unfinished)" if short or unfinished else "")
    )
    return _FanoutResult(p99, emitted, complete)


async def _subscribe(
    server: ServerProcess,
    path: str,
    state: _FanoutState,
    sub: _Subscriber,
    connect: asyncio.Semaphore,
) -> None:
    """One subscriber: check every event arrives once and in order, time the live ones.

    Frames are split on the blank line that ends them; all that is parsed per frame
    is its `id:` (seq) and, once per seq for all subscribers, its `at`.
    """
    attached = False
    response: bench_client.Response | None = None
    try:
        async with connect:
            response = await bench_client.get(HOST, server.port, path, _auth(server), timeout=60)
        if response.status != 200:
            sub.problem = f"status {response.status}"
            return
        buffer = b""
        at_cache, latencies = state.at_cache, state.latencies
        while (body := await response.read()) is not None:
            received = time.time()
            if not body:
                continue
            buffer += body
            if b"\n\n" not in buffer:
                continue
            *frames, buffer = buffer.split(b"\n\n")
            live_from = state.live_from
            for frame in frames:
                if not frame.startswith(b"id: "):
                    if not attached and frame.startswith(b"retry:"):
                        attached = True
                        _attached(state)
                    continue  # the retry line, or a `: ping`
                newline = frame.index(b"\n")
                seq = int(frame[4:newline])
                if seq != sub.next_seq and sub.problem is None:
                    sub.problem = f"expected seq {sub.next_seq}, got {seq}"
                sub.next_seq = seq + 1
                at = at_cache.get(seq)
                if at is None:
                    start = frame.rindex(b'"at":"') + 6
                    at = at_cache[seq] = parse_iso(frame[start : frame.index(b'"', start)].decode())
                if live_from is not None and at >= live_from:
                    latencies.append((seq, received - at))
                if frame.startswith(b"event: completed", newline + 1):
                    sub.done = True
            state.catch_up(sub)
        if not sub.done and sub.problem is None:
            sub.problem = "the stream ended before the completed event"
    except asyncio.CancelledError:
        raise  # the measurement is over; what arrived is judged by the caller
    except Exception as exc:
        if sub.problem is None:
            sub.problem = f"{type(exc).__name__}: {exc}"
    finally:
        if response is not None:
            response.close()
        if not attached:
            _attached(state)  # counted as given up, so nobody waits for it
        state.catch_up(sub)


def _attached(state: _FanoutState) -> None:
    """Count a subscriber as attached (or as given up, so nobody waits for it)."""
    state.connected += 1
    if state.connected >= state.expected:
        state.all_connected.set()
