"""Shared plumbing of `make bench` (`tests.bench.run`): constants, rows, the API client,
servers and figure formatting used by every benchmark module."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import resource
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from rich.console import Console

from stream.eventloop import loop_factory
from stream.sse.parser import SSEParser
from tests.bench import client as bench_client
from tests.support.launcher import ServerProcess, make_server

T = TypeVar("T")

HOST = "127.0.0.1"
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_BENCH_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
"""Where the PostgreSQL rows are measured unless `STEPLOG_BENCH_POSTGRES` says otherwise."""
CONNECT_CONCURRENCY = 64
"""Connections opened at once: below Hypercorn's listen backlog (100), so no SYN is
dropped and retried a second later, which would show up as fake latency."""


class BenchError(Exception):
    """A figure could not be measured; the message says why, for the table."""


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


# -- plumbing ---------------------------------------------------------------------------


def _raise_open_file_limit() -> None:
    """1,000+ sockets on each side: lift the soft limit to the hard one.

    The server subprocess inherits the raised limit from this process.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def measure_with(main: Coroutine[Any, Any, T]) -> T:
    """Run a measuring client: on uvloop, with the cyclic garbage collector paused.

    The client reads 1,000 streams one after another in one event loop, so its
    own time per delivery is part of every latency it records (for steplog and
    the peer alike). uvloop roughly halves that time, and a full collection of
    the client's heap (tens of milliseconds with 1,000 connections open) would
    land in the percentiles as if the server had stalled. Nothing here makes
    garbage cycles worth collecting within one measurement.
    """
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(main)
    finally:
        gc.enable()
        gc.unfreeze()


@contextlib.contextmanager
def _server(root: Path, name: str, **settings: Any) -> Iterator[ServerProcess]:
    """A fresh server in its own directory (own database), stopped on the way out.

    `settings` are `STEPLOG_*` values (str, int or float); typed `Any` only because
    mypy cannot tell them apart from `make_server`'s keyword-only `port`.
    """
    server = make_server(root / name, **settings)
    # `steplog serve` records itself in the per-user config (for the CLI): a benchmark's
    # server, gone a minute later, must not replace the user's real one there.
    server.env["XDG_CONFIG_HOME"] = str(root / name / "config-home")
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


async def envelopes(
    response: bench_client.Response, silence: float = 30.0
) -> AsyncIterator[tuple[float, dict[str, Any]]]:
    """Each event's envelope with the wall-clock time its bytes arrived, parsed by the
    project's SSE parser; `silence` seconds without a byte is an error. For streams
    read one at a time: the fan-out's 1,000 subscribers split frames themselves."""
    parser = SSEParser()
    while True:
        async with asyncio.timeout(silence):
            body = await response.read()
        if body is None:
            return
        received = time.time()
        for event in parser.feed(body):
            yield received, json.loads(event.data)


async def _event_after(server: ServerProcess, run_id: str, after: int) -> dict[str, Any]:
    """The envelope of the first event after seq `after` (replay, then hang up)."""
    response = await bench_client.get(
        HOST, server.port, f"/runs/{run_id}/events?last_event_id={after}", _auth(server)
    )
    try:
        if response.status != 200:
            raise BenchError(f"GET events of {run_id} after {after} answered {response.status}")
        async for _received, envelope in envelopes(response):
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


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time a process (all its threads) and its live children have
    used, from /proc (Linux): `serve --processes N` serves from N children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children")
    with contextlib.suppress(OSError):
        for child in children.read_text().split():
            with contextlib.suppress(OSError):  # gone meanwhile
                own += _cpu_seconds(int(child))
    return own


async def _gather_bounded(coros: list[Awaitable[Any]], limit: int) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Awaitable[Any]) -> Any:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))
