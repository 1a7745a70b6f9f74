"""`steplog bench`: the performance figures steplog promises, measured for real.

Every figure comes from a real `steplog serve` subprocess on loopback (started with
`stream.launcher.make_server`, in a temporary directory, stopped afterwards) and is
the median of several runs, so one unlucky scheduling hiccup does not decide it.
Numbers live here, never in a timed unit test.

The figures:

1. acknowledged appends/s with 1, 8 and 64 concurrent `ticker` emitters: each
   append is awaited, so it is acknowledged only after its commit. Wall time is
   taken from the events' own `at` timestamps (first `run.started` to last terminal
   event), so HTTP polling overhead on the benchmark side does not count.
2. replay of a finished 100,000-event run to one client, from the start.
3. live fan-out: 1,000 subscribers of one run emitting 20 events/s; commit-to-receipt
   latency p99, and whether every subscriber got every event exactly once, in order.
4. server memory per idle open stream (RSS growth over 1,000 idle streams).

Then appends (64 emitters), replay and memory again on PostgreSQL, each on a
throwaway schema of the server at `STEPLOG_BENCH_POSTGRES` (default: the local
test server), with smaller counts where writing the events would take long; when
that server cannot be reached, one row says so instead.

Clients read raw sockets (`stream.bench_client`) rather than httpx so the client is
not what gets measured. Progress goes to stderr; the markdown table is returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from storage.postgres import testing as postgres_testing
from storage.timefmt import parse_iso
from stream import bench_client
from stream.launcher import ServerProcess, make_server

HOST = "127.0.0.1"
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_BENCH_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
"""Where the PostgreSQL rows are measured unless `STEPLOG_BENCH_POSTGRES` says otherwise."""
CONNECT_CONCURRENCY = 64
"""Connections opened at once: below Hypercorn's listen backlog (100), so no SYN is
dropped and retried a second later, which would show up as fake latency."""


class BenchError(Exception):
    """A figure could not be measured; the message says why, for the table."""


@dataclass(frozen=True, slots=True)
class Plan:
    """How big and how often: the full benchmark, or the quick smoke run."""

    reps: int
    append_events: dict[int, int]
    """Emitters -> total events per measurement (sized for a few seconds each)."""
    replay_events: int
    fanout_subscribers: int
    fanout_count: int
    fanout_interval_ms: int
    memory_streams: int
    memory_warmup: int
    pg_append_events: int
    """Events for the 64-emitter append figure on PostgreSQL (the other counts are shared,
    except the replay run's, below: one emitter writes it, which takes longest)."""
    pg_replay_events: int


FULL = Plan(
    reps=3,
    append_events={1: 2_500, 8: 10_000, 64: 64_000},
    replay_events=100_000,
    fanout_subscribers=1_000,
    fanout_count=600,
    fanout_interval_ms=50,
    memory_streams=1_000,
    memory_warmup=50,
    pg_append_events=32_000,
    pg_replay_events=10_000,
)
QUICK = Plan(
    reps=1,
    append_events={1: 1_000, 8: 4_000, 64: 12_800},
    replay_events=10_000,
    fanout_subscribers=200,
    fanout_count=100,
    fanout_interval_ms=50,
    memory_streams=1_000,
    memory_warmup=50,
    pg_append_events=6_400,
    pg_replay_events=2_000,
)


@dataclass(slots=True)
class Row:
    """One line of the result table."""

    benchmark: str
    figure: str
    target: str = "—"
    met: bool | None = None


@dataclass(slots=True)
class RunInfo:
    """What the benchmark needs of a run record."""

    id: str
    status: str
    last_seq: int


def run_benchmarks(quick: bool = False) -> str:
    """Run every benchmark against fresh real servers; return a markdown table."""
    plan = QUICK if quick else FULL
    console = Console(stderr=True)
    _raise_open_file_limit()
    rows: list[Row] = []
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="steplog-bench-") as tmp:
        root = Path(tmp)
        rows.extend(bench_appends(root, plan, console))
        # Writing the replay's big run takes a while and weighs nothing on memory, so
        # the memory benchmark runs meanwhile (its figure is RSS, not speed).
        replay, memory = bench_replay(
            root, plan, console, lambda: bench_memory(root, plan, console)
        )
        rows.extend(replay)
        rows.extend(bench_fanout(root, plan, console))
        rows.extend(memory)
        rows.extend(bench_postgres(root, plan, console))
    rows.extend(audit_rows(quick))
    elapsed = time.perf_counter() - started
    machine = _machine_note(load_before, elapsed)
    console.log(machine)
    return render_table(rows) + f"\n\n_{machine}_"


def audit_rows(quick: bool) -> list[Row]:
    """The audit's figures (verify and export of a 1,000,000-event log, with peak memory)."""
    from stream.bench_audit import audit_benchmarks

    return [
        Row(name, figure, target, None if met == "—" else met == "yes")
        for name, figure, target, met in audit_benchmarks(quick=quick)
    ]


def _machine_note(load_before: float, elapsed: float) -> str:
    """Where the figures came from: they mean little without the machine's size and
    how busy it was (server and clients share its CPUs with anything else running)."""
    load_after = os.getloadavg()[0]
    return (
        f"{os.cpu_count()} CPUs, load average {load_before:.1f} before and {load_after:.1f}"
        f" after; {elapsed:.0f} s in all"
    )


def render_table(rows: list[Row]) -> str:
    lines = ["| benchmark | figure | target | met? |", "| --- | --- | --- | --- |"]
    for row in rows:
        met = "—" if row.met is None else ("yes" if row.met else "**no**")
        cells = [_cell(row.benchmark), _cell(row.figure), _cell(row.target), met]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def _cell(text: str, limit: int = 400) -> str:
    """Table-safe text: an error message must not break the markdown table."""
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- plumbing ---------------------------------------------------------------------------


def _raise_open_file_limit() -> None:
    """1,000+ sockets on each side: lift the soft limit to the hard one.

    The server subprocess inherits the raised limit from this process.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@contextlib.contextmanager
def _server(root: Path, name: str, **settings: Any) -> Iterator[ServerProcess]:
    """A fresh server in its own directory (own database), stopped on the way out.

    `settings` are `STEPLOG_*` values (str, int or float); typed `Any` only because
    mypy cannot tell them apart from `make_server`'s keyword-only `port`.
    """
    server = make_server(root / name, **settings)
    try:
        server.start(timeout=60)
    except Exception as exc:
        server.stop()
        log = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
        last = [line for line in log.splitlines() if line.strip()][-3:]
        raise BenchError(f"{exc} — server log ends: {' / '.join(last)}") from exc
    try:
        yield server
    finally:
        server.stop()


def _median_figure(values: list[float], fmt: Callable[[float], str]) -> str:
    """The median, and every run behind it so the spread is visible."""
    median = statistics.median(values)
    if len(values) == 1:
        return fmt(median)
    return f"{fmt(median)} (runs: {', '.join(fmt(v) for v in values)})"


def _rate(value: float) -> str:
    return f"{value:,.0f}/s"


def _ms(value: float) -> str:
    return f"{value * 1000:,.0f} ms"


def _kib(value: float) -> str:
    return f"{value / 1024:,.1f} KiB"


def _error(console: Console, what: str, exc: BaseException) -> str:
    message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    console.log(f"[red]{what} failed: {message}")
    return f"not measured: {message}"


class Api:
    """The few API calls the benchmark makes, over one keep-alive httpx client."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.client = httpx.AsyncClient(
            base_url=server.url, headers=server.headers, timeout=httpx.Timeout(30.0)
        )

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def start_ticker(self, count: int, interval_ms: int) -> str:
        response = await self.client.post(
            "/runs",
            json={"function": "ticker", "params": {"count": count, "interval_ms": interval_ms}},
        )
        if response.status_code != 202:
            raise BenchError(f"POST /runs answered {response.status_code}: {response.text}")
        run_id: str = response.json()["run_id"]
        return run_id

    async def run(self, run_id: str) -> RunInfo:
        response = await self.client.get(f"/runs/{run_id}")
        response.raise_for_status()
        body = response.json()
        return RunInfo(body["id"], body["status"], body["last_seq"])

    async def wait_finished(self, run_ids: list[str], timeout: float) -> list[RunInfo]:
        """Poll one list request every 0.25 s (not one per run) until all have ended.

        The runs are the newest ones on the server (ids sort by creation time), so a
        page of exactly that many holds them all and costs the server little while it
        is being measured; a run the page misses is looked up on its own.
        """
        wanted = set(run_ids)
        deadline = time.monotonic() + timeout
        while True:
            response = await self.client.get(
                "/runs", params={"function": "ticker", "limit": min(1000, len(run_ids))}
            )
            response.raise_for_status()
            seen = {
                r["id"]: RunInfo(r["id"], r["status"], r["last_seq"])
                for r in response.json()["runs"]
                if r["id"] in wanted
            }
            for run_id in wanted - seen.keys():
                seen[run_id] = await self.run(run_id)
            if all(info.status in FINISHED for info in seen.values()):
                runs = [seen[run_id] for run_id in run_ids]
                failed = [r for r in runs if r.status != "succeeded"]
                if failed:
                    raise BenchError(f"run {failed[0].id} ended {failed[0].status}")
                return runs
            if time.monotonic() > deadline:
                pending = sum(info.status not in FINISHED for info in seen.values())
                raise BenchError(f"{pending} of {len(run_ids)} runs unfinished after {timeout}s")
            await asyncio.sleep(0.25)  # polling the run list, bounded by the deadline


def _auth(server: ServerProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.api_key}"}


async def _event_after(server: ServerProcess, run_id: str, after: int) -> dict[str, Any]:
    """The envelope of the first event after seq `after` (replay, then hang up)."""
    response = await bench_client.get(
        HOST, server.port, f"/runs/{run_id}/events?last_event_id={after}", _auth(server)
    )
    try:
        if response.status != 200:
            raise BenchError(f"GET events of {run_id} after {after} answered {response.status}")
        buffer = b""
        while (body := await asyncio.wait_for(response.read(), 30)) is not None:
            buffer += body
            for frame in buffer.split(b"\n\n")[:-1]:
                for line in frame.split(b"\n"):
                    if line.startswith(b"data: "):
                        envelope: dict[str, Any] = json.loads(line[6:])
                        return envelope
        raise BenchError(f"the stream of {run_id} ended without an event after {after}")
    finally:
        response.close()


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    index = max(0, math.ceil(fraction * len(sorted_values)) - 1)
    return sorted_values[index]


def _rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for process {pid}")


async def _gather_bounded(coros: list[Awaitable[Any]], limit: int) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Awaitable[Any]) -> Any:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


# -- 1. acknowledged appends ------------------------------------------------------------


def bench_appends(
    root: Path, plan: Plan, console: Console, *, db: str | None = None, suffix: str = ""
) -> list[Row]:
    """Acknowledged appends/s with 1, 8 and 64 concurrent emitters (target: 20k/s at 64).

    One server with as many workers as the largest emitter count, so every run starts
    at once; each measurement is a fresh set of runs on it. `db` (a URL) measures
    another log than the server's own SQLite file; `suffix` then names it in the rows.
    """
    rows: list[Row] = []
    name = "pg-appends" if db else "appends"
    try:
        with _server(root, name, db=db, workers=max(plan.append_events)) as server:
            for emitters, total in plan.append_events.items():
                rows.append(_append_row(server, emitters, total, plan, console, suffix))
    except Exception as exc:  # the server itself failed to start or stop
        name = "acknowledged appends/s" + suffix
        rows.append(Row(name, _error(console, name, exc), "", False))
    return rows


def _append_row(
    server: ServerProcess,
    emitters: int,
    total: int,
    plan: Plan,
    console: Console,
    suffix: str = "",
) -> Row:
    name = f"acknowledged appends/s, {emitters} emitter{'s' if emitters > 1 else ''}{suffix}"
    target, goal = ("≥ 20,000/s", 20_000.0) if emitters == 64 else ("—", None)
    rates: list[float] = []
    try:
        for _ in range(plan.reps):
            rates.append(asyncio.run(_append_once(server, emitters, max(1, total // emitters))))
            console.log(f"{name}: {_rate(rates[-1])}")
    except Exception as exc:
        return Row(name, _error(console, name, exc), target, False if goal else None)
    median = statistics.median(rates)
    return Row(name, _median_figure(rates, _rate), target, None if goal is None else median >= goal)


async def _append_once(server: ServerProcess, emitters: int, per_run: int) -> float:
    """One measurement: `emitters` ticker runs of `per_run` ticks, rate from event times."""
    async with Api(server) as api:
        run_ids = list(
            await asyncio.gather(*(api.start_ticker(per_run, 0) for _ in range(emitters)))
        )
        runs = await api.wait_finished(run_ids, timeout=120 + per_run * emitters / 1000)

    async def bounds(run: RunInfo) -> tuple[float, float, int]:
        # seq 1 is run.queued (written at creation, outside the window), seq 2 run.started.
        started = await _event_after(server, run.id, 1)
        ended = await _event_after(server, run.id, run.last_seq - 1)
        if started["type"] != "run.started" or ended["type"] != "run.succeeded":
            raise BenchError(f"unexpected events {started['type']}, {ended['type']} in {run.id}")
        appended = run.last_seq - started["seq"] + 1  # run.started through the terminal event
        return parse_iso(started["at"]), parse_iso(ended["at"]), appended

    spans = await _gather_bounded([bounds(run) for run in runs], 16)
    first = min(s[0] for s in spans)
    last = max(s[1] for s in spans)
    events = sum(s[2] for s in spans)
    if last <= first:
        raise BenchError("the event timestamps span no time")
    return events / (last - first)


# -- 2. replay --------------------------------------------------------------------------


def bench_replay(
    root: Path,
    plan: Plan,
    console: Console,
    meanwhile: Callable[[], list[Row]],
    *,
    db: str | None = None,
    suffix: str = "",
) -> tuple[list[Row], list[Row]]:
    """Replay of a finished run from the start to one client (target: 100k events/s).

    The run is written by one ticker (one emitter, each append acknowledged), which
    takes a while; `meanwhile` runs during that time and its rows are returned too.
    `db` and `suffix` as for `bench_appends`.
    """
    name = f"replay of a finished {plan.replay_events:,}-event run to 1 client{suffix}"
    target = "≥ 100,000 events/s"
    other: list[Row] | None = None
    try:
        with _server(root, "pg-replay" if db else "replay", db=db, workers=1) as server:
            run_id = asyncio.run(_start_replay_run(server, plan, console))
            other = meanwhile()
            rates = asyncio.run(_replay_all(server, run_id, plan, console))
    except Exception as exc:
        rows = [Row(name, _error(console, name, exc), target, False)]
    else:
        median = statistics.median(rates)
        rows = [Row(name, _median_figure(rates, _rate), target, median >= 100_000)]
    return rows, meanwhile() if other is None else other


async def _start_replay_run(server: ServerProcess, plan: Plan, console: Console) -> str:
    # Besides its `count` progress events a ticker run has five more: run.queued,
    # run.started, step.started, step.completed and run.succeeded.
    console.log(f"replay: writing a {plan.replay_events:,}-event run with one emitter")
    async with Api(server) as api:
        return await api.start_ticker(plan.replay_events - 5, 0)


async def _replay_all(
    server: ServerProcess, run_id: str, plan: Plan, console: Console
) -> list[float]:
    started = time.perf_counter()
    async with Api(server) as api:
        (run,) = await api.wait_finished([run_id], timeout=900)
    console.log(f"replay: the run is written ({time.perf_counter() - started:.0f} s more)")
    rates = []
    for _ in range(plan.reps):
        events, seconds = await asyncio.wait_for(_replay_once(server, run), 120)
        rates.append(events / seconds)
        console.log(f"replay: {events:,} events in {seconds:.2f} s = {_rate(events / seconds)}")
    return rates


async def _replay_once(server: ServerProcess, run: RunInfo) -> tuple[int, float]:
    """Read the whole stream from the start; count events (one `data:` line each).

    Counting `\\ndata: ` with bytes.count keeps the client at C speed; the last six
    bytes of each piece are carried over so a marker split across reads counts once.
    """
    started = time.perf_counter()
    response = await bench_client.get(HOST, server.port, f"/runs/{run.id}/events", _auth(server))
    try:
        if response.status != 200:
            raise BenchError(f"GET /runs/{run.id}/events answered {response.status}")
        events = 0
        carry = b""
        tail = b""
        while (body := await response.read()) is not None:
            if not body:
                continue
            data = carry + body
            events += data.count(b"\ndata: ")
            carry = data[-6:]
            tail = (tail + body)[-4096:]
        seconds = time.perf_counter() - started
    finally:
        response.close()
    last_frame = tail.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    if b"\nevent: completed\n" not in last_frame:
        raise BenchError("the replay did not end with the `completed` event")
    if events != run.last_seq:
        raise BenchError(f"replay delivered {events} events, the run has {run.last_seq}")
    return events, seconds


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


# -- 4. memory per idle stream ----------------------------------------------------------


def bench_memory(
    root: Path, plan: Plan, console: Console, *, db: str | None = None, suffix: str = ""
) -> list[Row]:
    """Server RSS growth per idle open stream (target: < 64 KiB).

    A server without workers keeps a created run queued forever: its streams are
    open and idle (a ping every 15 s), which is exactly what is being weighed (on a
    shared `db`, only if no other process's worker can claim it: give it its own).
    """
    n = plan.memory_streams
    name = f"server memory per idle open stream ({n:,} streams){suffix}"
    target = "< 64 KiB"
    values: list[float] = []
    try:
        for rep in range(plan.reps):
            directory = f"pg-memory{rep}" if db else f"memory{rep}"
            with _server(root, directory, db=db, workers=0) as server:
                assert server.process is not None
                per_stream = asyncio.run(_memory_once(server, server.process.pid, plan))
            console.log(f"memory: {_kib(per_stream)} per idle stream")
            values.append(per_stream)
    except Exception as exc:
        return [Row(name, _error(console, name, exc), target, False)]
    median = statistics.median(values)
    return [Row(name, _median_figure(values, _kib), target, median < 64 * 1024)]


async def _memory_once(server: ServerProcess, pid: int, plan: Plan) -> float:
    async with Api(server) as api:
        run_id = await api.start_ticker(10, 0)  # never claimed: the server has no workers
    path = f"/runs/{run_id}/events"
    connect = asyncio.Semaphore(CONNECT_CONCURRENCY)
    opened: list[bench_client.Response] = []

    async def open_stream() -> None:
        async with connect:
            response = await bench_client.get(HOST, server.port, path, _auth(server), timeout=60)
        opened.append(response)
        if response.status != 200:
            raise BenchError(f"GET {path} answered {response.status}")
        body = b""
        while b"retry:" not in body:  # the first bytes of every stream
            chunk = await asyncio.wait_for(response.read(), 30)
            if chunk is None:
                raise BenchError("an idle stream ended")
            body += chunk

    async def settled_rss() -> int:
        await asyncio.sleep(1.0)  # let the server finish the replay reads it started
        return _rss_bytes(pid)

    try:
        await asyncio.gather(*(open_stream() for _ in range(plan.memory_warmup)))
        before = await settled_rss()
        await asyncio.gather(*(open_stream() for _ in range(plan.memory_streams)))
        after = await settled_rss()
    finally:
        for response in opened:
            response.close()
    return (after - before) / plan.memory_streams


# -- 5. the same on PostgreSQL ----------------------------------------------------------


def bench_postgres(root: Path, plan: Plan, console: Console) -> list[Row]:
    """Appends (64 emitters), replay and memory on PostgreSQL, beside SQLite's figures.

    Each benchmark gets its own throwaway schema (`storage.postgres.testing`), so
    one's worker never claims another's run and nothing is left behind. Fan-out is
    left out: its cost is Hypercorn's per-write work, the same on either log. The
    append and replay counts are smaller than SQLite's (named in the rows) so the
    extra time stays modest; the rates are per second all the same.
    """
    url = os.environ.get("STEPLOG_BENCH_POSTGRES") or DEFAULT_BENCH_POSTGRES
    problem = asyncio.run(postgres_testing.unreachable(url))
    if problem is not None:
        console.log(f"[yellow]PostgreSQL: {problem}")
        hint = "set STEPLOG_BENCH_POSTGRES to a server steplog may create schemas on"
        return [Row("PostgreSQL figures", f"not measured: {problem} ({hint})")]
    appends = replace(plan, append_events={64: plan.pg_append_events})
    replay = replace(plan, replay_events=plan.pg_replay_events)
    rows: list[Row] = []
    try:  # each benchmark reports its own failures; this catches a schema that fails
        with _postgres_schema(url, console) as db:
            suffix = f" (PostgreSQL, {plan.pg_append_events:,} events)"
            rows.extend(bench_appends(root, appends, console, db=db, suffix=suffix))
        with _postgres_schema(url, console) as db:
            replayed, _ = bench_replay(
                root, replay, console, lambda: [], db=db, suffix=" (PostgreSQL)"
            )
            rows.extend(replayed)
        with _postgres_schema(url, console) as db:
            rows.extend(bench_memory(root, plan, console, db=db, suffix=" (PostgreSQL)"))
    except Exception as exc:
        rows.append(Row("PostgreSQL figures", _error(console, "PostgreSQL", exc)))
    return rows


@contextlib.contextmanager
def _postgres_schema(url: str, console: Console) -> Iterator[str]:
    """A fresh schema on `url` for one benchmark, dropped afterwards (a failed drop is
    only logged: the figures are measured by then)."""
    db = asyncio.run(postgres_testing.create_schema(url))
    try:
        yield db
    finally:
        try:
            asyncio.run(postgres_testing.drop_schema(db))
        except Exception as exc:
            _error(console, f"dropping the schema of {db}", exc)
