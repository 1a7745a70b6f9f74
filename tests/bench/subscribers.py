"""The live fan-out measurement, whatever the server: N subscribers on one stream of
events emitted at a steady rate; emit-to-receipt latency, completeness, client CPU.

One subscriber code and one piece of latency maths serve steplog and its peer
(nchan), so the two figures differ only by the server. What differs between them
is a `FanoutSource`: how emitting starts, where to subscribe, how a frame names its
sequence number and which frame says the subscriber is attached. Every event's
`at` (commit time for steplog, publish time for nchan) is in its JSON, parsed once
per sequence number for all subscribers.

The bench client shares the machine with the server, so its own CPU use is
measured over the live window too: a client that saturates a core would make
the latency its own, not the server's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Protocol

from rich.console import Console

from storage.timefmt import parse_iso
from tests.bench import client as bench_client
from tests.bench.common import CONNECT_CONCURRENCY, HOST, BenchError, _ms, _percentile
from tests.support.wait import wait_for

CLIENT_SATURATED = 0.9
"""Client CPU (share of one core) above which its figures are suspect."""


@dataclass(frozen=True, slots=True)
class Emitted:
    """How far the emitter got: its last sequence number, whether it has finished and
    whether it failed (then completeness is not judged by the end of the stream)."""

    last_seq: int
    finished: bool
    failed: bool


class FanoutSource(Protocol):
    """One server's side of the measurement (steplog run or nchan channel)."""

    label: str
    port: int
    headers: dict[str, str]

    async def start(self) -> str:
        """Start emitting (a ticker run, a publisher task); return the stream's path."""
        ...

    async def emitted(self) -> Emitted: ...

    def server_cpu(self) -> float:
        """CPU seconds the server has used so far (for the log: who was busy)."""
        ...

    def seq_of(self, frame: bytes) -> int | None:
        """The frame's sequence number (1, 2, … in emit order); None if no event."""
        ...

    def attached(self, frame: bytes) -> bool:
        """Whether this non-event frame says the stream is subscribed to live events."""
        ...


@dataclass(slots=True)
class FanoutResult:
    """One measurement: latencies in seconds, the rest as the rows show them."""

    p50: float
    p99: float
    emitted_per_s: float
    complete: bool
    errors: int
    """Subscribers that failed: refused, disconnected, out of order, or an exception."""
    client_cpu: float
    """Bench process CPU time over wall time during the live window (1.0 = one core)."""
    client_per_delivery: float
    """Bench process CPU seconds per live delivery: times the subscriber count, the
    client's own floor under the latency of the last subscriber served per event (one
    event loop reads the subscribers one after the other)."""


@dataclass(slots=True)
class _Subscriber:
    next_seq: int = 1
    done: bool = False
    problem: str | None = None


@dataclass(slots=True)
class _State:
    """What all subscribers of one measurement share."""

    expected: int
    live_from: float | None = None
    """Epoch seconds after which every subscriber was attached: only events emitted
    from then on count for latency (earlier ones may have come by replay)."""
    at_cache: dict[int, float] = field(default_factory=dict)
    """seq -> emit time: every subscriber sees the same events, parse each `at` once."""
    latencies: list[tuple[int, float]] = field(default_factory=list)
    """(seq, receipt - emit) for every live delivery."""
    connected: int = 0
    all_connected: asyncio.Event = field(default_factory=asyncio.Event)

    def attach(self) -> None:
        """Count a subscriber as attached (or as given up, so nobody waits for it)."""
        self.connected += 1
        if self.connected >= self.expected:
            self.all_connected.set()


async def measure(source: FanoutSource, n: int, nominal: float, console: Console) -> FanoutResult:
    """One measurement of `n` subscribers on a stream that should last `nominal` seconds.

    Emitting starts first, so subscribers attach from seq 1 while it runs, get the
    first events by replay, and latency counts only what was emitted after all of
    them were attached. If the source cannot keep the asked-for rate, the
    measurement stops at 1.2 x the nominal duration: it then checks every event
    emitted so far reached every subscriber, instead of waiting for the end.
    """
    state = _State(expected=n)
    subscribers = [_Subscriber() for _ in range(n)]
    connect = asyncio.Semaphore(CONNECT_CONCURRENCY)
    path = await source.start()
    tasks = [
        asyncio.create_task(_subscribe(source, path, state, sub, connect)) for sub in subscribers
    ]
    try:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(state.all_connected.wait(), 120)
        except TimeoutError:
            raise BenchError(f"only {state.connected} of {n} subscribers attached") from None
        # The attach marker comes just before a stream subscribes to live events: give
        # the last ones a moment to finish their catch-up read.
        live_from = state.live_from = time.time() + 0.2
        console.log(
            f"fan-out ({source.label}): {n:,} subscribers attached in"
            f" {time.perf_counter() - started:.1f} s"
        )
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        server_start = source.server_cpu()
        _done, pending = await asyncio.wait(tasks, timeout=nominal * 1.2 + 2)
        cpu = time.process_time() - cpu_start
        wall = time.perf_counter() - wall_start
        client_cpu, server_cpu = cpu / wall, (source.server_cpu() - server_start) / wall
        emitted = await source.emitted()
        cut = emitted.last_seq  # every subscriber must get at least this far
        if pending:
            console.log(f"fan-out ({source.label}): not finished in time, checking up to {cut}")

            def caught_up() -> bool:  # everything up to the cut, or given up
                return all(sub.next_seq > cut or sub.problem is not None for sub in subscribers)

            with contextlib.suppress(AssertionError):  # the deadline: `_result` counts who is short
                await wait_for(caught_up, 15, what=f"every subscriber to reach seq {cut}")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    per_delivery = cpu / max(1, len(state.latencies))
    cpus = (client_cpu, per_delivery, server_cpu)
    return _result(source.label, state, subscribers, emitted, live_from, cpus, console)


def _result(
    label: str,
    state: _State,
    subscribers: list[_Subscriber],
    emitted: Emitted,
    live_from: float,
    cpus: tuple[float, float, float],
    console: Console,
) -> FanoutResult:
    """The latency percentiles, achieved rate and completeness of one measurement."""
    cut = emitted.last_seq
    latencies = sorted(latency for seq, latency in state.latencies if seq <= cut)
    if not latencies:
        raise BenchError("no event was emitted after all subscribers attached")
    p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
    live_ats = sorted(at for seq, at in state.at_cache.items() if at >= live_from and seq <= cut)
    span = live_ats[-1] - live_ats[0] if len(live_ats) > 1 else 0.0
    rate = (len(live_ats) - 1) / span if span > 0 else 0.0
    problems = [s.problem for s in subscribers if s.problem]
    short = sum(s.next_seq <= cut for s in subscribers)
    unfinished = sum(not s.done for s in subscribers) if emitted.finished else 0
    complete = not emitted.failed and not problems and not short and not unfinished
    client_cpu, per_delivery, server_cpu = cpus
    saturated = " (saturated: the client may be the bottleneck)" * (client_cpu > CLIENT_SATURATED)
    console.log(
        f"fan-out ({label}): p50 {_ms(p50)}, p99 {_ms(p99)}, max {_ms(latencies[-1])} over"
        f" {len(latencies):,} live deliveries; {rate:.1f} events/s emitted; client CPU"
        f" {client_cpu:.0%}{saturated}, {per_delivery * 1e6:.0f} µs per delivery; server CPU"
        f" {server_cpu:.0%}; complete: {complete}"
        + (f" ({len(problems)} errors, first: {problems[0]})" if problems else "")
        + (f" ({short} short, {unfinished} unfinished)" if short or unfinished else "")
    )
    return FanoutResult(p50, p99, rate, complete, len(problems), client_cpu, per_delivery)


async def _subscribe(
    source: FanoutSource,
    path: str,
    state: _State,
    sub: _Subscriber,
    connect: asyncio.Semaphore,
) -> None:
    """One subscriber: check every event arrives once and in order, time the live ones.

    Frames are split on the blank line that ends them; all that is parsed per frame
    is its sequence number and, once per seq for all subscribers, its `at`. It ends
    at the `completed` event (nchan keeps the stream open after it).
    """
    attached = False
    response: bench_client.Response | None = None
    try:
        async with connect:
            response = await bench_client.get(HOST, source.port, path, source.headers, timeout=60)
        if response.status != 200:
            sub.problem = f"status {response.status}"
            return
        buffer = b""
        at_cache, latencies, seq_of = state.at_cache, state.latencies, source.seq_of
        while not sub.done and (body := await response.read()) is not None:
            received = time.time()
            if not body:
                continue
            buffer += body
            if b"\n\n" not in buffer:
                continue
            *frames, buffer = buffer.split(b"\n\n")
            live_from = state.live_from
            for frame in frames:
                seq = seq_of(frame)
                if seq is None:
                    if not attached and source.attached(frame):
                        attached = True
                        state.attach()
                    continue  # the attach marker, or a ping
                if seq != sub.next_seq and sub.problem is None:
                    sub.problem = f"expected seq {sub.next_seq}, got {seq}"
                sub.next_seq = seq + 1
                at = at_cache.get(seq)
                if at is None:
                    start = frame.rindex(b'"at":"') + 6
                    at = at_cache[seq] = parse_iso(frame[start : frame.index(b'"', start)].decode())
                if live_from is not None and at >= live_from:
                    latencies.append((seq, received - at))
                if b"event: completed\n" in frame:
                    sub.done = True
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
            state.attach()  # counted as given up, so nobody waits for it
