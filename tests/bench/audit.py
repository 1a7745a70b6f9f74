"""The audit's benchmark: verify and export speed on a 1,000,000-event log, with peak memory.

The log is built through the real storage API (`SQLiteEventLog`: runs created
and claimed, then ticker-like events appended in big concurrent batches, so
group commit writes thousands per transaction and the chain is the one the
writer computes). Each measurement is then the real command a user runs,
`steplog audit …`, in its own process: its wall time (interpreter start
included, so the figure is what a user waits), its CPU time, and its own peak
RSS (VmHWM, read by the child as it exits), so neither the build of the log
nor this process's memory count.

`python -m tests.bench.audit [--quick]` prints the rows on their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from storage import NewEvent, open_log

TARGET_RATE = 200_000
TARGET_MIB = 100
EVENTS_PER_RUN = 1000
ROUND_EVENTS = 4000
"""Appends queued at once while building the log (about two group commits' worth)."""

Row = tuple[str, str, str, str]


def audit_benchmarks(quick: bool) -> list[Row]:
    """(benchmark, figure, target, met?) rows: verify, export and offline verify."""
    events = 100_000 if quick else 1_000_000
    reps = 1 if quick else 3
    size = f"{events:,}-event log"
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="steplog-bench-audit-") as tmp:
        db = Path(tmp) / "steplog.db"
        started = time.perf_counter()
        asyncio.run(build_log(db, events))
        _say(f"built a {size} in {time.perf_counter() - started:.1f} s")
        export = Path(tmp) / "export.jsonl"
        measured = {
            "verify": [_measure("audit", "verify", "--db", str(db)) for _ in range(reps)],
            "export": [
                _measure("audit", "export", "--db", str(db), "-o", str(export)) for _ in range(reps)
            ],
            "offline": [_measure("audit", "verify", "--file", str(export)) for _ in range(reps)],
        }
        export_mib = export.stat().st_size / 2**20
    for key, title, target in (
        ("verify", f"audit verify, {size}", TARGET_RATE),
        ("export", f"audit export (JSONL, {export_mib:,.0f} MiB), {size}", None),
        ("offline", f"audit verify --file (offline, the export), {size}", None),
    ):
        runs = measured[key]
        rates = [events / seconds for seconds, _, _ in runs]
        rate = statistics.median(rates)
        spread = "" if len(rates) == 1 else f"; runs: {', '.join(f'{r:,.0f}' for r in rates)}"
        seconds = statistics.median(s for s, _, _ in runs)
        cpu = statistics.median(c for _, c, _ in runs)
        figure = f"{rate:,.0f} events/s ({seconds:.2f} s, CPU {cpu:.2f} s{spread})"
        if target is None:
            rows.append((title, figure, "—", "—"))
        else:
            rows.append((title, figure, f"≥ {target:,} events/s", _met(rate >= target)))
        peak = max(mib for _, _, mib in runs)
        rows.append(
            (f"{title}: peak memory", f"{peak:,.1f} MiB", f"< {TARGET_MIB} MiB", _met(peak < 100))
        )
    return rows


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


_CHILD = """
import atexit, os, runpy, sys

def _peak():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                with open(os.environ["STEPLOG_BENCH_PEAK"], "w") as out:
                    out.write(line.split()[1])

atexit.register(_peak)
sys.argv = ["steplog", *sys.argv[1:]]
runpy.run_module("stream", run_name="__main__", alter_sys=True)
"""
"""`python -m stream ARGS` that writes its own peak RSS (VmHWM, KiB) when it exits.

Not `wait4`'s `ru_maxrss`: Linux carries the parent's high-water mark into a
child across fork and exec, so the child would be charged for this process.
"""


def _measure(*args: str) -> tuple[float, float, float]:
    """Run `steplog ARGS` in a child: its wall seconds, CPU seconds and peak RSS in MiB.

    CPU time (from `wait4`) is shown beside wall time because on a busy machine
    the wall time also measures the other processes.
    """
    started = time.perf_counter()
    with tempfile.TemporaryFile() as output, tempfile.NamedTemporaryFile("r") as peak:
        env = {**os.environ, "STEPLOG_BENCH_PEAK": peak.name}
        process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, *args],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            output.seek(0)
            said = output.read().decode(errors="replace")[-500:]
            raise RuntimeError(f"steplog {' '.join(args)} exited {process.returncode}: {said}")
        kib = peak.read().strip()
    if not kib:
        raise RuntimeError("the child did not report its peak memory (no /proc/self/status?)")
    mib = int(kib) / 1024
    cpu = usage.ru_utime + usage.ru_stime
    _say(f"steplog {args[0]} {args[1]}: {seconds:.2f} s (CPU {cpu:.2f} s), peak {mib:.1f} MiB")
    return seconds, cpu, mib


async def build_log(path: Path, events: int, per_run: int = EVENTS_PER_RUN) -> None:
    """A log of exactly `events` events of finished ticker-like runs, through the real API.

    Each run: `run.queued`, `run.started`, `step.started`, progress…,
    `step.completed`, `run.succeeded`. Appends go out a round at a time, one per
    run, all concurrently, so each group commit carries hundreds of them.
    """
    if events < 5:
        raise ValueError("a benchmark log needs at least one whole run (5 events)")
    log = open_log(str(path))
    await log.open()
    try:
        runs: list[tuple[str, int]] = []
        remaining = events
        while remaining > 0:
            count = min(per_run, remaining)
            if count < 5:  # too few for a whole run: fold them into the previous run
                runs[-1] = (runs[-1][0], runs[-1][1] + count)
                break
            run, _ = await log.create_run("ticker", {"count": count - 5, "interval_ms": 0})
            runs.append((run.id, count))
            remaining -= count
        claims = [log.claim_run("bench-audit", 3600, ["ticker"]) for _ in runs]
        if None in await asyncio.gather(*claims):
            raise RuntimeError("a benchmark run could not be claimed")
        attempts = {run_id: (await log.get_run(run_id)).attempt for run_id, _ in runs}
        longest = max(count for _, count in runs)
        # Seq 1 and 2 exist (queued, started). Each round queues the next few events of
        # every run at once, in order, so the writer commits about ROUND_EVENTS per batch.
        step = max(1, ROUND_EVENTS // len(runs))
        for start in range(2, longest, step):
            batch = [
                _event(run_id, attempts[run_id], index, count)
                for run_id, count in runs
                for index in range(start, min(start + step, count))
            ]
            await asyncio.gather(*(log.append(event) for event in batch))
    finally:
        await log.close()


def _event(run_id: str, attempt: int, index: int, count: int) -> NewEvent:
    """The event at seq `index + 1` of a run of `count` events."""
    ticks = count - 5
    if index == 2:
        return NewEvent(run_id, "step.started", attempt, "tick", f"ticking {ticks} times")
    if index == count - 2:
        return NewEvent(run_id, "step.completed", attempt, "tick", "tick: done", 100.0,
                        {"duration_ms": 1234.5})  # fmt: skip
    if index == count - 1:
        return NewEvent(run_id, "run.succeeded", attempt, None, "done", 100.0,
                        {"result": {"ticks": ticks}})  # fmt: skip
    tick = index - 2
    data: dict[str, Any] = {"tick": tick}
    return NewEvent(run_id, "step.progress", attempt, "tick", f"tick {tick}/{ticks}",
                    100 * tick / ticks, data)  # fmt: skip


def main() -> None:
    quick = "--quick" in sys.argv[1:]
    rows = audit_benchmarks(quick)
    print("| benchmark | figure | target | met? |\n| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(json.dumps({"rows": rows}, ensure_ascii=False), file=sys.stderr)


if __name__ == "__main__":
    main()
