"""32 concurrent writers, 100,000 events, random delays before commits: nothing lost.

The writers are 32 `PostgresEventLog` instances (each with its own connections)
spread over 4 subprocesses, all appending into the same 64 runs. Half of them
hold each commit back by a random delay inside its transaction — the situation
in which ids from a sequence would become visible out of order; the other half
append the short way where they can (one statement, numbered against a cache the
others keep making stale: storage/postgres/cached.py). Meanwhile, in this process:

- a `TailHub` (the stream's real fan-out) on its own log instance, woken only by
  LISTEN/NOTIFY (its polls are a minute apart), follows every run stream and the
  global stream;
- a bare cursor reader pages `read_all(cursor)` at random moments, the way a
  reconnecting `GET /events` client does.

Each must see every event exactly once, in order: per run, seq contiguous up to
the terminal event; globally, pos contiguous. And every acknowledged append is
in the log exactly once, on an intact hash chain.

Run this module as a script to be one writer subprocess (see `_writer_main`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time

import pytest

from storage import Event, EventType, NewEvent, chain
from storage.postgres.log import PostgresEventLog
from stream.sse.hub import Subscriber, TailHub
from tests.support.launcher import ROOT

TOTAL_EVENTS = int(os.environ.get("STEPLOG_PG_STRESS_EVENTS", "100000"))
PROCESSES = 4
WRITERS_PER_PROCESS = 8  # 32 writers
RUNS = 64
MAX_COMMIT_DELAY = 0.002  # seconds, random, inside each write transaction
DEADLINE = 240.0


async def cursor_reader(log: PostgresEventLog, stop_at: asyncio.Future[int]) -> list[int]:
    """Page the global stream by cursor at random moments, as a resuming client does."""
    seen: list[int] = []
    cursor = 0
    rng = random.Random(7)
    while not (stop_at.done() and cursor >= stop_at.result()):
        page = await log.read_all(cursor, 500)
        if page:
            seen.extend(e.pos for e in page)
            cursor = page[-1].pos
        await asyncio.sleep(rng.uniform(0, 0.005))
    return seen


@pytest.mark.timeout(300)
async def test_32_writers_100k_events_every_tailer_sees_each_once_in_order(pg_url: str) -> None:
    started = time.monotonic()
    admin = PostgresEventLog(pg_url)
    tail_log = PostgresEventLog(pg_url, poll_interval=60)
    reader_log = PostgresEventLog(pg_url, readers=1)
    for log in (admin, tail_log, reader_log):
        await log.open()
    hub = TailHub(tail_log, poll_interval=60, buffer=10 * TOTAL_EVENTS)
    try:
        run_ids = []
        for i in range(RUNS):
            run, _ = await admin.create_run("ticker", {"i": i})
            assert (await admin.claim_run("setup", 600, ["ticker"])) is not None
            run_ids.append(run.id)
        first_pos = await admin.head() + 1  # everything from here on is followed live

        await hub.start()
        assert tail_log.watcher is not None
        await asyncio.wait_for(tail_log.watcher.connected.wait(), 10)
        stop_at: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        with contextlib.ExitStack() as stack:
            everyone = stack.enter_context(hub.subscribe(None))
            per_run = {run_id: stack.enter_context(hub.subscribe(run_id)) for run_id in run_ids}
            reader = asyncio.create_task(cursor_reader(reader_log, stop_at))

            phases = {"setup": time.monotonic() - started}
            acked = await asyncio.to_thread(run_writer_processes, pg_url, run_ids)
            phases["writers"] = time.monotonic() - started - sum(phases.values())
            for run_id in run_ids:
                await admin.append(NewEvent(run_id, EventType.RUN_SUCCEEDED, 1, data={"result": 1}))
            last_pos = await admin.head()
            stop_at.set_result(last_pos)
            global_keys = await drain_until(everyone, last_pos, started)
            run_keys = {
                run_id: await drain_terminal(sub, started) for run_id, sub in per_run.items()
            }
            seen_by_reader = await reader
            phases["tailers"] = time.monotonic() - started - sum(phases.values())

        # Every acknowledged append is in the log exactly once; the chain is intact.
        log_events = await read_everything(admin)
        appended = [e for e in log_events if e.type == EventType.LOG]
        assert len(appended) == TOTAL_EVENTS == sum(acked.values())
        tags = [json.loads(e.data)["tag"] for e in appended]
        assert len(set(tags)) == TOTAL_EVENTS
        prev = chain.GENESIS_HASH
        for e in log_events:
            assert e.hash == chain.link(prev, chain.canonical_row(
                e.pos, e.run_id, e.seq, e.type, e.step, e.message, e.pct, e.data, e.attempt, e.at
            ))  # fmt: skip
            prev = e.hash
        assert [e.pos for e in log_events] == list(range(1, last_pos + 1))

        # The global stream, live (hub) and by cursor (reader): each pos once, in order.
        assert global_keys == list(range(first_pos, last_pos + 1))
        assert seen_by_reader == list(range(1, last_pos + 1))
        # Every run stream: seq 3.. (1 and 2 were queued/started before tailing) up to terminal.
        for run_id in run_ids:
            last_seq = (await admin.get_run(run_id)).last_seq
            assert run_keys[run_id] == list(range(3, last_seq + 1)), run_id
        assert hub.dropped_slow == 0
        phases["checks"] = time.monotonic() - started - sum(phases.values())
    finally:
        await hub.stop()
        for log in (admin, tail_log, reader_log):
            await log.close()
    print(
        f"\n{TOTAL_EVENTS} events by 32 writers verified in {time.monotonic() - started:.1f}s",
        ", ".join(f"{name} {seconds:.1f}s" for name, seconds in phases.items()),
    )


def run_writer_processes(url: str, run_ids: list[str]) -> dict[str, int]:
    """Start the writer subprocesses, wait for them, return acks per writer."""
    per_process = TOTAL_EVENTS // PROCESSES
    procs = []
    for p in range(PROCESSES):
        quota = per_process if p < PROCESSES - 1 else TOTAL_EVENTS - per_process * p
        command = [
            *(sys.executable, "-m", "tests.postgres.test_postgres_concurrency"),
            *("--url", url, "--process", str(p), "--runs", ",".join(run_ids)),
            *("--writers", str(WRITERS_PER_PROCESS), "--events", str(quota)),
        ]
        procs.append(
            subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        )
    acked: dict[str, int] = {}
    for proc in procs:
        out, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
        acked.update(json.loads(out.decode().strip().splitlines()[-1]))
    assert len(acked) == PROCESSES * WRITERS_PER_PROCESS
    return acked


async def drain_until(sub: Subscriber, last_key: int, started: float) -> list[int]:
    keys: list[int] = []
    while not keys or keys[-1] < last_key:
        assert time.monotonic() - started < DEADLINE, f"global stream stuck at {keys[-1:]}"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sub.wait(), 1.0)
        keys.extend(key for key, _frame, _terminal in sub.drain())
        assert not sub.overflowed
    return keys


async def drain_terminal(sub: Subscriber, started: float) -> list[int]:
    keys: list[int] = []
    while True:
        for key, _frame, terminal in sub.drain():
            keys.append(key)
            if terminal:
                return keys
        assert time.monotonic() - started < DEADLINE, "a run stream never got its terminal event"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sub.wait(), 1.0)


async def read_everything(log: PostgresEventLog) -> list[Event]:
    events: list[Event] = []
    cursor = 0
    while page := await log.read_all(cursor, 10_000):
        events.extend(page)
        cursor = page[-1].pos
    return events


# -- the writer subprocess ----------------------------------------------------------


async def _writer(
    url: str, name: str, quota: int, run_ids: list[str], rng: random.Random, *, late: bool
) -> tuple[str, int]:
    """`late`: delay every commit; otherwise never, so it takes the short way when its
    cache holds."""

    async def late_commit() -> None:
        await asyncio.sleep(rng.uniform(0, MAX_COMMIT_DELAY))

    log = PostgresEventLog(url, readers=1, before_commit=late_commit if late else None)
    await log.open()
    done = 0
    try:
        while done < quota:
            burst = min(quota - done, rng.randint(1, 64))
            await asyncio.gather(
                *[
                    log.append(
                        NewEvent(rng.choice(run_ids), EventType.LOG, 1, data={"tag": f"{name}:{i}"})
                    )
                    for i in range(done, done + burst)
                ]
            )
            done += burst
            await asyncio.sleep(rng.uniform(0, 0.003))
    finally:
        await log.close()
    return name, done


async def _writer_main(args: argparse.Namespace) -> None:
    run_ids = args.runs.split(",")
    share, extra = divmod(args.events, args.writers)
    results = await asyncio.gather(
        *[
            _writer(
                args.url,
                f"p{args.process}w{w}",
                share + (1 if w < extra else 0),
                run_ids,
                random.Random(args.process * 100 + w),
                late=w % 2 == 0,
            )
            for w in range(args.writers)
        ]
    )
    print(json.dumps(dict(results)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one writer process of the 32-writer test")
    parser.add_argument("--url", required=True)
    parser.add_argument("--process", type=int, required=True)
    parser.add_argument("--writers", type=int, required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--runs", required=True)
    asyncio.run(_writer_main(parser.parse_args()))
