"""`make bench` storage figures: acknowledged appends, replay of a finished run,
memory per idle stream, and the same on PostgreSQL (see `tests.bench.run`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from storage.timefmt import parse_iso
from tests.bench import client as bench_client
from tests.bench.common import (
    DEFAULT_BENCH_POSTGRES,
    HOST,
    Api,
    BenchError,
    Row,
    RunInfo,
    _auth,
    _error,
    _event_after,
    _gather_bounded,
    _kib,
    _median_figure,
    _rate,
    _server,
    measure_with,
)
from tests.bench.idle import WARMUP, IdleStreams, settled_rss
from tests.support import postgres as postgres_testing
from tests.support.launcher import ServerProcess

if TYPE_CHECKING:
    from tests.bench.run import Plan

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
    peer: Callable[[list[float]], list[Row]] | None = None,
) -> tuple[list[Row], list[Row]]:
    """Replay of a finished run from the start to one client (target: 100k events/s).

    The run is written by one ticker (one emitter, each append acknowledged), which
    takes a while; `meanwhile` runs during that time and its rows are returned too.
    `db` and `suffix` as for `bench_appends`. `peer`, given steplog's rates (none if
    they could not be measured), measures the same replay on another server right
    after and returns its rows, which follow steplog's.
    """
    name = f"replay of a finished {plan.replay_events:,}-event run to 1 client{suffix}"
    target = "≥ 100,000 events/s"
    other: list[Row] | None = None
    try:
        with _server(root, "pg-replay" if db else "replay", db=db, workers=1) as server:
            run_id = asyncio.run(_start_replay_run(server, plan, console))
            other = meanwhile()
            rates = measure_with(_replay_all(server, run_id, plan, console))
    except Exception as exc:
        rates = []
        rows = [Row(name, _error(console, name, exc), target, False)]
    else:
        median = statistics.median(rates)
        rows = [Row(name, _median_figure(rates, _rate), target, median >= 100_000)]
    other = meanwhile() if other is None else other
    if peer is not None:
        rows += peer(rates)
    return rows, other


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
        cpu = time.process_time()
        events, seconds, size = await asyncio.wait_for(_replay_once(server, run), 120)
        cpu = time.process_time() - cpu
        rates.append(events / seconds)
        console.log(
            f"replay: {events:,} events ({size / events:.0f} bytes each) in {seconds:.2f} s"
            f" = {_rate(events / seconds)}; client CPU {cpu / seconds:.0%}"
        )
    return rates


async def _replay_once(server: ServerProcess, run: RunInfo) -> tuple[int, float, int]:
    """Read the whole stream from the start; count events (`bench_client.count_events`)."""
    started = time.perf_counter()
    response = await bench_client.get(HOST, server.port, f"/runs/{run.id}/events", _auth(server))
    try:
        if response.status != 200:
            raise BenchError(f"GET /runs/{run.id}/events answered {response.status}")
        events, size, tail = await bench_client.count_events(response)
        seconds = time.perf_counter() - started
    finally:
        response.close()
    last_frame = tail.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    if b"\nevent: completed\n" not in last_frame:
        raise BenchError("the replay did not end with the `completed` event")
    if events != run.last_seq:
        raise BenchError(f"replay delivered {events} events, the run has {run.last_seq}")
    return events, seconds, size


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
    async with IdleStreams(server, f"/runs/{run_id}/events") as streams:
        await streams.open(WARMUP)
        before = await settled_rss(pid, 1.0)
        await streams.open(plan.memory_streams)
        after = await settled_rss(pid, 1.0)
    return (after - before) / plan.memory_streams


# -- 5. the same on PostgreSQL ----------------------------------------------------------


def bench_postgres(root: Path, plan: Plan, console: Console) -> list[Row]:
    """Appends (64 emitters), replay and memory on PostgreSQL, beside SQLite's figures.

    Each benchmark gets its own throwaway schema (`tests.support.postgres`), so
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
