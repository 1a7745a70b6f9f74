"""Clients that hang up in the middle of a stream leave nothing behind in the server.

A browser tab closed during a long replay, or an interrupted `curl`, ends its
connection with a reset while the server is writing (or about to write) a chunk.
Each such stream must give its slot back and let go of everything it held: the
chunk being sent, the task that wrote it, its generators. Measured on a real
server from the outside: its resident memory (`/proc/<pid>/status`) over hundreds
of aborted streams, and its open-stream count in `/metrics`.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerFactory
from tests.support.api import get_run, start_run, wait_for_status
from tests.support.launcher import ROOT, ServerProcess
from tests.support.wait import wait_until

FLOOD_MODULE = "tests.server.flood_functions"
WARM_UP = 100
"""Aborts before the first measurement: buffers, caches and allocator arenas settle."""
ABORTS = 500
MAX_GROWTH_KIB = 5 * 1024
SETTLE_EVERY = 10
"""Wait for the server to close every aborted stream this often (and sample its RSS),
so that the aborts of the measured part overlap no more than those of the warm-up."""
SAMPLES = 10
"""How many RSS samples (one per settle) each end of the measurement looks at.

Even with nothing kept, the RSS moves by a MiB or two with what happens to be in
flight and how the heap is fragmented at that moment; a leak only ever adds. So the
server's footprint once warm is the highest of the last samples of the warm-up,
and what it kept is the lowest of the last samples of the measured aborts: the
noise cancels out, while 500 leaked streams would raise every sample alike."""
MID_REPLAY_BYTES = 64 * 1024

Done = Callable[[bytes], bool]
"""Given the body bytes read so far, whether to hang up now."""


@pytest.fixture
def flood_server(server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> ServerProcess:
    """A real server that also knows the test-only `flood` function (see `echo_server`).

    glibc's malloc is told to map every block over 128 KiB on its own, as it does by
    default until it first frees one: a replay chunk (hundreds of KiB) then leaves the
    resident set when it is freed instead of staying in a reusable heap, so the RSS
    measures what the server keeps, not how large its heap once grew.
    """
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) if not path else f"{ROOT}{os.pathsep}{path}")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
    return server_factory(ping_interval=1, poll_interval=0.2, functions=FLOOD_MODULE)


def rss_kib(server: ServerProcess) -> int:
    """The server process's resident set size, from the kernel."""
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1])


def open_streams(server: ServerProcess) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "steplog_open_streams":
                return float(sample.value)
    raise AssertionError("/metrics has no steplog_open_streams")


def settle(server: ServerProcess) -> None:
    """Wait until the server has closed every stream (each gave its slot back)."""
    wait_until(
        lambda: open_streams(server) == 0,
        30,
        interval=0.02,
        what="every aborted stream to give its slot back",
    )


def abort(server: ServerProcess, path: str, done: Done | None) -> None:
    """Request `path`, read its body until `done` (None: read nothing at all), then reset
    the connection (SO_LINGER 0: an RST, as when a tab is closed or `curl` killed)."""
    head = f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.api_key}\r\n\r\n"
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    try:
        sock.sendall(head.encode())
        if done is None:
            return
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"{path}: the server closed before answering"
            data += chunk
        status, _, body = data.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 200"), status
        while not done(body):
            chunk = sock.recv(65536)
            assert chunk, f"{path}: the stream ended after {len(body)} bytes"
            body += chunk
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def after_bytes(count: int) -> Done:
    return lambda body: len(body) >= count


def after_text(needle: bytes) -> Done:
    return lambda body: needle in body[-(len(needle) + 70_000) :]


@dataclass
class Scenario:
    name: str
    count: int
    """Events the flood run appends before anything is read."""
    live: bool
    """Whether the run stays live (ticking) instead of finishing."""
    path: str
    """What to request; `{run}` is the flood run's id."""
    done: Done


RUN_PATH = "/runs/{run}/events"

SCENARIOS = [
    # A finished run of 20,000 events, cut 64 KB into its replay.
    Scenario("finished_run", 20_000, False, RUN_PATH, after_bytes(MID_REPLAY_BYTES)),
    # A live run joined from its start: cut once it has caught up and follows the run.
    Scenario("live_run", 3_000, True, RUN_PATH, after_text(b'"flooded"')),
    # The global stream from the start of a 20,000-event log, cut 64 KB into its replay.
    Scenario("global_stream", 20_000, False, "/events", after_bytes(MID_REPLAY_BYTES)),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.name)
def test_aborted_streams_give_back_their_memory_and_slots(
    flood_server: ServerProcess, scenario: Scenario
) -> None:
    server = flood_server
    params: dict[str, int] = {"count": scenario.count, "pad": 100}
    if scenario.live:
        params["tick_ms"] = 200
    run_id = start_run(server, "flood", **params)["run_id"]
    if scenario.live:
        wait_until(
            lambda: get_run(server, run_id)["last_seq"] > scenario.count + 2,
            60,
            what="the live run to append its events",
        )
    else:
        wait_for_status(server, run_id, "succeeded", timeout=60)
    path = scenario.path.format(run=run_id)

    def aborts(count: int) -> list[int]:
        """Abort `count` streams; the server's RSS after each settle, the last SAMPLES."""
        samples = []
        for index in range(count):
            abort(server, path, scenario.done)
            if (index + 1) % SETTLE_EVERY == 0:
                settle(server)
                samples.append(rss_kib(server))
        return samples[-SAMPLES:]

    before = max(aborts(WARM_UP))
    after = min(aborts(ABORTS))
    growth = after - before
    print(f"{scenario.name}: RSS {before} KiB -> {after} KiB ({growth:+} KiB) over {ABORTS} aborts")
    assert growth < MAX_GROWTH_KIB, (
        f"the server's RSS grew by {growth} KiB ({before} -> {after}) over {ABORTS} aborted"
        f" streams ({scenario.name}): aborted streams are kept"
    )
    assert open_streams(server) == 0


def test_streams_abandoned_before_the_first_byte_give_their_slots_back(
    flood_server: ServerProcess,
) -> None:
    """Clients that send the request and reset at once: the slot comes back every time."""
    server = flood_server
    run_id = start_run(server, "flood", count=100, tick_ms=200)["run_id"]
    wait_until(lambda: get_run(server, run_id)["last_seq"] > 100, 30, what="the live run")
    for _ in range(200):
        abort(server, RUN_PATH.format(run=run_id), None)
    settle(server)
