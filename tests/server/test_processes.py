"""`steplog serve --processes N` and the doorbell between processes on one SQLite file.

Every poll that could carry events or runs between processes is set to a minute
(`tail_poll_interval`, the workers' `poll_interval`), so what arrives within the
tests' deadlines came through the doorbell (storage/doorbell.py), never a poll.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from storage.doorbell import bell_directory
from tests.conftest import ServerFactory
from tests.support.api import start_run, wait_for_status
from tests.support.launcher import ServerProcess
from tests.support.sse import read_stream, until_terminal
from tests.support.wait import wait_until

NEVER = 60
"""Seconds: no test here waits that long, so no poll brings anything."""
FAREWELL = b": server shutting down, reconnect"


class RawStream:
    """One `GET /events` on a plain socket, read on a thread until the server closes it."""

    def __init__(self, server: ServerProcess) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        self.sock.sendall(
            f"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {server.api_key}\r\n\r\n".encode()
        )
        self.data = bytearray()
        self.closed = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while chunk := self.sock.recv(65536):
                self.data += chunk
        except OSError:
            pass
        finally:
            self.closed.set()

    @property
    def client_port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def close(self) -> None:
        self.sock.close()


def all_serving(server: ServerProcess) -> list[int]:
    """The serving processes, once every one accepts (the parent then says so, once)."""
    wait_until(lambda: "steplog serving on" in server.log_path.read_text(), 20, what="start-up")
    assert server.process is not None
    return children(server.process.pid)


def children(pid: int) -> list[int]:
    """The child processes of `pid` (Linux)."""
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def serving_process(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """Which of `pids` holds the server end of the connection from `client_port`."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if (
            int(local.split(":")[1], 16) == server_port
            and int(remote.split(":")[1], 16) == client_port
        ):
            inode = fields[9]
    if inode is None:
        return None
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return None


def streams_on_both(server: ServerProcess, pids: list[int]) -> list[RawStream]:
    """Open streams until each serving process holds at least one (the kernel spreads
    connections over the processes' sockets, so a few are enough)."""
    streams: list[RawStream] = []
    holders: dict[int, int] = {}

    def both() -> bool:
        stream = RawStream(server)
        streams.append(stream)
        holder = wait_until(
            lambda: serving_process(server.port, stream.client_port, pids),
            10,
            what="the process serving a stream",
        )
        holders[holder] = holders.get(holder, 0) + 1
        return len(holders) == len(pids)

    wait_until(both, 30, interval=0, what=f"streams on each of {pids}")
    return streams


def test_two_processes_share_the_port_and_stop_together(server_factory: ServerFactory) -> None:
    server = server_factory(processes=2, workers=2, tail_poll_interval=NEVER, poll_interval=NEVER)
    assert server.process is not None
    pids = all_serving(server)
    assert len(pids) == 2
    log = server.log_path.read_text()
    assert log.count("steplog serving on") == 1 and "2 processes" in log  # said once
    streams = streams_on_both(server, pids)
    try:
        # A run executed by one process reaches the streams of both: the other process
        # hears of each commit through the doorbell (its tail polls once a minute).
        run = start_run(server, "ticker", count=3, interval_ms=10)
        wait_for_status(server, run["run_id"], "succeeded", timeout=20)
        for stream in streams:
            wait_until(
                lambda stream=stream: b'"type":"run.succeeded"' in stream.data,
                10,
                what="every stream, on either process, to get the run's last event",
            )
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
        for stream in streams:
            assert stream.closed.wait(10)
            assert FAREWELL in stream.data, stream.data[-200:]
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists(), f"serving process {pid} outlived its parent"
        assert list(bell_directory(server.db).iterdir()) == []  # each removed its socket
    finally:
        for stream in streams:
            stream.close()


def test_a_killed_process_is_replaced_and_its_socket_does_not_break_commits(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(processes=2, workers=2, tail_poll_interval=NEVER, poll_interval=NEVER)
    assert server.process is not None
    parent = server.process.pid
    victim = all_serving(server)[1]
    os.kill(victim, signal.SIGKILL)  # no chance to remove its doorbell socket
    replaced = wait_until(
        lambda: len(now := children(parent)) == 2 and victim not in now and now,
        20,
        what="a process in place of the killed one",
    )
    wait_until(lambda: "is back" in server.log_path.read_text(), 20, what="the replacement")
    stale = [p for p in bell_directory(server.db).iterdir() if p.name.startswith(f"{victim}-")]
    assert stale, "the killed process's socket is still there before the next commit"
    streams = streams_on_both(server, replaced)
    try:
        run = start_run(server, "ticker", count=3, interval_ms=10)
        wait_for_status(server, run["run_id"], "succeeded", timeout=20)
        for stream in streams:
            wait_until(lambda stream=stream: b'"type":"run.succeeded"' in stream.data, 10)
        assert not any(path.exists() for path in stale)  # removed by the first ring to it
    finally:
        for stream in streams:
            stream.close()


def test_a_separate_worker_claims_at_once_and_its_events_reach_the_stream(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(processes=1, workers=0, tail_poll_interval=NEVER)
    worker_log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "stream", "worker", "--db", str(server.db), "--workers", "1"],
        env={**server.env, "STEPLOG_POLL_INTERVAL": str(NEVER)},
        stdout=worker_log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            lambda: "steplog worker" in (tmp_path / "worker.log").read_text(), 20, what="worker"
        )
        # One after another: each run is queued while the worker's one slot waits out
        # its minute-long poll, so only the doorbell can have it claim the run.
        for _ in range(3):
            run = start_run(server, "ticker", count=2, interval_ms=10)
            stream = read_stream(server.url + run["stream_url"], until=until_terminal, timeout=20)
            assert [e["type"] for e in stream.envelopes][-1] == "run.succeeded"
            assert stream.envelopes[1]["data"]["worker"].split(":")[1] == str(worker.pid)
    finally:
        worker.terminate()
        worker.wait(timeout=15)
        worker_log.close()
