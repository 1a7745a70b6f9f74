"""`make bench`: the performance figures steplog promises, measured for real.

Every figure comes from a real `steplog serve` subprocess on loopback (started with
`tests.support.launcher.make_server`, in a temporary directory, stopped afterwards) and is
the median of several runs, so one unlucky scheduling hiccup does not decide it.
Numbers live here, never in a timed unit test.

The figures:

1. acknowledged appends/s with 1, 8 and 64 concurrent `ticker` emitters: each
   append is awaited, so it is acknowledged only after its commit. Wall time is
   taken from the events' own `at` timestamps (first `run.started` to last terminal
   event), so HTTP polling overhead on the benchmark side does not count.
2. replay of a finished 100,000-event run to one client, from the start.
3. live fan-out: 1,000 subscribers of one run emitting 20 events/s; commit-to-receipt
   latency p50 and p99, and whether every subscriber got every event exactly once,
   in order.
4. server memory per idle open stream (RSS growth over 1,000 idle streams).
5. capacity: 10,000 idle streams held on one instance, their memory at that scale,
   and the live fan-out's latency beside them (`tests.bench.capacity`).
6. wake-ups across processes: a separate `steplog worker`'s commits reaching the
   server's streams (`tests.bench.wakeup`).

Then appends (64 emitters), replay and memory again on PostgreSQL, each on a
throwaway schema of the server at `STEPLOG_BENCH_POSTGRES` (default: the local
test server), with smaller counts where writing the events would take long; when
that server cannot be reached, one row says so instead.

Replay and fan-out are also measured on a peer, nchan (nginx's pub/sub module, one
worker: `tests.bench.nchan`), in the same run with the same client, and the rows
give the ratio of steplog's figure to nchan's; without nchan installed those rows
say so.

Clients read raw sockets (`tests.bench.client`) rather than httpx so the client is
not what gets measured; the fan-out rows show the client's own CPU use to check it.
Progress goes to stderr; the markdown table is returned.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from tests.bench.capacity import bench_capacity
from tests.bench.common import Row, _raise_open_file_limit
from tests.bench.fanout import bench_fanout
from tests.bench.replay_peer import bench_nchan_replay
from tests.bench.storage import bench_appends, bench_memory, bench_postgres, bench_replay
from tests.bench.wakeup import bench_wakeup


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
    capacity_idle: int
    """Idle streams held open beside the live fan-out (`tests.bench.capacity`)."""
    pg_append_events: int
    """Events for the 64-emitter append figure on PostgreSQL (the other counts are shared,
    except the replay run's, below: one emitter writes it, which takes longest)."""
    pg_replay_events: int
    wakeup_ticks: int
    """Events of the ticker run timed across processes (`tests.bench.wakeup`)."""
    wakeup_triggers: int
    """`POST /runs` timed to their first event, per repetition."""

    @property
    def fanout_rate(self) -> float:
        """Events per second the fan-out's emitter is asked for."""
        return 1000 / self.fanout_interval_ms

    @property
    def fanout_seconds(self) -> float:
        """How long the fan-out's emitter runs at that rate."""
        return self.fanout_count * self.fanout_interval_ms / 1000


FULL = Plan(
    reps=3,
    append_events={1: 2_500, 8: 10_000, 64: 64_000},
    replay_events=100_000,
    fanout_subscribers=1_000,
    fanout_count=600,
    fanout_interval_ms=50,
    memory_streams=1_000,
    capacity_idle=10_000,
    pg_append_events=32_000,
    pg_replay_events=10_000,
    wakeup_ticks=400,
    wakeup_triggers=200,
)
QUICK = Plan(
    reps=1,
    append_events={1: 1_000, 8: 4_000, 64: 12_800},
    replay_events=10_000,
    fanout_subscribers=200,
    fanout_count=100,
    fanout_interval_ms=50,
    memory_streams=1_000,
    capacity_idle=2_000,
    pg_append_events=6_400,
    pg_replay_events=2_000,
    wakeup_ticks=100,
    wakeup_triggers=50,
)


BENCHMARKS = (
    "appends",
    "replay",
    "fanout",
    "capacity",
    "memory",
    "postgres",
    "audit",
    "archive",
    "wakeup",
)
"""The groups `--only` selects from, in the order they run."""


def run_benchmarks(quick: bool = False, only: frozenset[str] = frozenset(BENCHMARKS)) -> str:
    """Run the benchmarks in `only` against fresh real servers; return a markdown table."""
    plan = QUICK if quick else FULL
    console = Console(stderr=True)
    _raise_open_file_limit()
    rows: list[Row] = []
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="steplog-bench-") as tmp:
        root = Path(tmp)
        if "appends" in only:
            rows.extend(bench_appends(root, plan, console))
        replay: list[Row] = []
        memory: list[Row] = []
        if "replay" in only:
            # Writing the replay's big run takes a while and weighs nothing on memory,
            # so the memory benchmark runs meanwhile (its figure is RSS, not speed).
            replay, memory = bench_replay(
                root,
                plan,
                console,
                (lambda: bench_memory(root, plan, console)) if "memory" in only else list,
                peer=lambda rates: bench_nchan_replay(root, plan, console, rates),
            )
        elif "memory" in only:
            memory = bench_memory(root, plan, console)
        rows.extend(replay)
        if "fanout" in only:
            rows.extend(bench_fanout(root, plan, console))
        if "capacity" in only:
            rows.extend(bench_capacity(root, plan, console))
        rows.extend(memory)
        if "postgres" in only:
            rows.extend(bench_postgres(root, plan, console))
        if "wakeup" in only:
            rows.extend(bench_wakeup(root, plan, console))
    if "audit" in only:
        rows.extend(audit_rows(quick))
    if "archive" in only:
        rows.extend(archive_rows(quick))
    elapsed = time.perf_counter() - started
    machine = _machine_note(load_before, elapsed)
    console.log(machine)
    return render_table(rows) + f"\n\n_{machine}_"


def audit_rows(quick: bool) -> list[Row]:
    """The audit's figures (verify and export of a 1,000,000-event log, with peak memory)."""
    from tests.bench.audit import audit_benchmarks

    return [
        Row(name, figure, target, None if met == "—" else met == "yes")
        for name, figure, target, met in audit_benchmarks(quick=quick)
    ]


def archive_rows(quick: bool) -> list[Row]:
    """The archive's figures (throughput, live log size before/after: tests/bench/archive.py)."""
    from tests.bench.archive import archive_benchmarks

    return [
        Row(name, figure, target, None if met == "—" else met == "yes")
        for name, figure, target, met in archive_benchmarks(quick=quick)
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
