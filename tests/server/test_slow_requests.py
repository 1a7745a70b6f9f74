"""Slow clients that hold connections without ever finishing a request (slowloris),
against a real `steplog serve`: request heads have a deadline and a cap, request
bodies a deadline, and none of it touches requests or streams already under way."""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerFactory
from tests.support.api import PROBLEM_JSON, client, http_client, start_run
from tests.support.launcher import ROOT, free_port, stop_processes
from tests.support.probes import (
    metric,
    open_sockets,
    raw_request,
    read_response_head,
    read_until_closed,
)
from tests.support.sse import Follower, assert_contiguous
from tests.support.wait import wait_until

HEADER_TIMEOUT = 2.0
MARGIN = 10.0
"""Generous: the machine is busy. Without a head deadline Hypercorn keeps a slow
head until its 75 s keep-alive timer, far past it."""

TRICKLE_EVERY = 0.25
"""Seconds between two bytes of a slow head (the attack's pace, not a wait)."""


SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
FULL_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


@dataclass(eq=False)
class SlowClient:
    """One connection that sent part of a request head, and then a byte at a time
    (`trickle`) or nothing more."""

    sock: socket.socket
    opened: float
    trickle: bool
    received: bytes = b""
    closed_after: float | None = None
    ended: str = ""

    def close_seen(self, how: str) -> None:
        self.closed_after = time.monotonic() - self.opened
        self.ended = how
        self.sock.close()


def open_slow_clients(
    port: int, count: int, *, sends: bytes = SLOW_HEAD, trickle: bool = True
) -> list[SlowClient]:
    """`count` connections that sent `sends` at once, and will then `trickle`."""
    clients = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setblocking(False)
        if sends:
            sock.send(sends)
        clients.append(SlowClient(sock, time.monotonic(), trickle))
    return clients


def trickle_until_closed(clients: list[SlowClient], limit: float) -> None:
    """Send one more byte of every trickling head each tick until the server has
    closed every connection; fail if one is still open `limit` seconds after it
    was opened. Every socket is closed on the way out."""
    selector = selectors.DefaultSelector()
    for each in clients:
        selector.register(each.sock, selectors.EVENT_READ, each)
    still_open = set(clients)

    def closed(each: SlowClient, how: str) -> None:
        selector.unregister(each.sock)
        still_open.discard(each)
        each.close_seen(how)

    next_tick = time.monotonic()
    try:
        while still_open:
            now = time.monotonic()
            overdue = [each for each in still_open if now - each.opened > limit]
            assert not overdue, (
                f"{len(overdue)} of {len(clients)} slow connections still open {limit:g}s"
                f" after they were opened ({len(still_open)} open in all)"
            )
            for key, _ in selector.select(timeout=max(0.0, next_tick - now)):
                readable: SlowClient = key.data
                try:
                    chunk = readable.sock.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    closed(readable, "reset")
                    continue
                readable.received += chunk
                if not chunk:
                    closed(readable, "eof")
            if time.monotonic() >= next_tick:
                next_tick += TRICKLE_EVERY
                for each in [each for each in still_open if each.trickle]:
                    try:
                        each.sock.send(b"a")
                    except (BrokenPipeError, ConnectionResetError):
                        closed(each, "reset")
                    except BlockingIOError:
                        pass
    finally:
        selector.close()
        for each in still_open:
            each.sock.close()


class HealthProbe:
    """`GET /healthz` on a new connection each time, on a thread, until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answered: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> HealthProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(20)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = httpx.get(f"{self.url}/healthz", timeout=10)
            except httpx.TransportError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            else:
                if response.status_code == 200:
                    self.answered.append(time.monotonic())
                else:
                    self.failures.append(f"status {response.status_code}")
            self._stop.wait(0.1)  # the probe's pace


def test_slow_request_heads_are_cut_while_requests_and_streams_keep_flowing(
    server_factory: ServerFactory,
) -> None:
    """200 connections trickling a request head, 10 sending nothing, and 20 whose
    first request was answered and whose second head trickles or stalls, are each
    closed with a 408 about `STEPLOG_HEADER_TIMEOUT` after their head began, while
    fresh requests are answered and a live run's stream, idle for longer than that
    timeout between events, keeps its one connection; the server's descriptors
    come back to where they were."""
    server = server_factory(header_timeout=HEADER_TIMEOUT, ping_interval=0.5, poll_interval=0.2)
    assert server.process is not None
    pid = server.process.pid
    httpx.get(f"{server.url}/healthz", timeout=10).raise_for_status()
    before = wait_until(lambda: open_sockets(pid) or None, what="the server's sockets")

    # Ticks 2.5 s apart: between them the stream carries only pings, for longer
    # than the header timeout, and must not be cut for it.
    run = start_run(server, "ticker", count=3, interval_ms=2500)
    stream = Follower(server.url + run["stream_url"], deadline=60).start()
    wait_until(lambda: stream.received, 15, what="the stream's first event")
    probe = HealthProbe(server.url).start()

    slow = open_slow_clients(server.port, 200)
    slow += open_slow_clients(server.port, 10, sends=b"", trickle=False)
    kept_alive = open_slow_clients(server.port, 10, sends=FULL_REQUEST + SLOW_HEAD)
    kept_alive += open_slow_clients(server.port, 10, sends=FULL_REQUEST + SLOW_HEAD, trickle=False)
    burst_started = time.monotonic()
    trickle_until_closed(slow + kept_alive, HEADER_TIMEOUT + MARGIN)
    burst_ended = time.monotonic()

    stream.join(30)
    probe.stop()
    assert not probe.failures, probe.failures
    assert any(burst_started <= at <= burst_ended for at in probe.answered), (
        "no health check was answered during the burst"
    )
    assert len(stream.connections) == 1, f"the stream was cut: {stream.summary()}"
    (connection,) = stream.connections
    assert_contiguous([received.envelope for received in stream.received])
    assert stream.received[-1].event.event == "completed"
    assert any("ping" in comment for comment in connection.comments), connection.comments

    # A trickling client may see its next byte answered by a reset before it reads
    # the 408; one that sends nothing more reads it every time.
    for each in slow:
        if not each.trickle or each.received:
            assert each.received.startswith(b"HTTP/1.1 408 "), each.received
            assert PROBLEM_JSON.encode() in each.received, each.received
    for each in kept_alive:  # the first request was answered, the second cut
        assert each.received.startswith(b"HTTP/1.1 200 "), each.received
        if not each.trickle:
            assert b"HTTP/1.1 408 " in each.received, each.received
    assert metric(server.url, "steplog_connections_cut_total", reason="header_timeout") == 230
    assert metric(server.url, "steplog_request_heads_pending") == 0
    wait_until(
        lambda: open_sockets(pid) <= before + 2,
        timeout=10,
        what=f"the server to close the slow connections (sockets before: {before})",
    )


def kept_alive_metric(http: httpx.Client, name: str, **labels: str) -> float:
    """One sample of `/metrics`, asked on `http`'s kept-alive connection."""
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_connections_over_the_pending_cap_are_closed_at_once(
    server_factory: ServerFactory,
) -> None:
    """With `STEPLOG_MAX_PENDING_HEADERS` heads pending, a new connection is closed
    before anything is read, without an answer (a client takes it for a network
    error and retries; nginx tries another instance). A kept-alive connection, like
    nginx's upstream pool, is still served, and closed heads free their places."""
    cap = 20
    server = server_factory(header_timeout=60, max_pending_headers=cap)
    assert server.process is not None
    pid = server.process.pid
    with client(server) as kept:
        kept.get("/healthz").raise_for_status()  # this connection is now kept alive
        before = wait_until(lambda: open_sockets(pid) or None, what="the server's sockets")
        held = open_slow_clients(server.port, cap // 2)
        held += open_slow_clients(server.port, cap - cap // 2, sends=b"", trickle=False)
        wait_until(
            lambda: kept_alive_metric(kept, "steplog_request_heads_pending") == cap,
            what=f"{cap} pending request heads",
        )

        for _ in range(5):
            over = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            data, _how = read_until_closed(over, timeout=MARGIN)  # well before the 60 s deadline
            over.close()
            assert data == b"", data

        assert kept.get("/healthz").status_code == 200
        assert kept_alive_metric(kept, "steplog_connections_cut_total", reason="pending_cap") == 5
        assert (
            kept_alive_metric(kept, "steplog_connections_cut_total", reason="header_timeout") == 0
        )

        for each in held:
            each.sock.close()
        wait_until(
            lambda: kept_alive_metric(kept, "steplog_request_heads_pending") == 0,
            what="the closed heads to free their places",
        )
        wait_until(
            lambda: open_sockets(pid) <= before + 2,
            timeout=10,
            what=f"the server to close its ends (sockets before: {before})",
        )
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200


def test_a_request_body_that_does_not_arrive_in_time_gets_408(
    server_factory: ServerFactory,
) -> None:
    """A body that stops arriving is answered `408` problem+json after
    `STEPLOG_BODY_TIMEOUT`, the connection is closed, and nothing is written."""
    server = server_factory(body_timeout=1)
    head = (
        f"POST /runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.api_key}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    ).encode()
    sock = raw_request(server.port, head + b'{"function": "ticker", ')
    status, response = read_response_head(sock, timeout=MARGIN)
    assert status == 408 and PROBLEM_JSON.encode() in response, response
    _rest, how = read_until_closed(sock, timeout=MARGIN)
    sock.close()
    assert how in {"eof", "reset"}
    with client(server) as http:
        assert http.get("/runs").json()["runs"] == []


def test_under_hypercorns_cli_the_same_limits_apply(tmp_path: Path) -> None:
    """`hypercorn --config infra/hypercorn.toml stream.asgi:app` gets the head
    deadline and the cap from the same `STEPLOG_*` variables."""
    port = free_port()
    env = {
        **os.environ,
        "STEPLOG_DB": str(tmp_path / "steplog.db"),
        "STEPLOG_WORKERS": "0",
        "STEPLOG_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "STEPLOG_MAX_PENDING_HEADERS": "2",
    }
    command = [sys.executable, "-m", "hypercorn", "--config", "infra/hypercorn.toml"]
    command += ["--bind", f"127.0.0.1:{port}", "stream.asgi:app"]
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    try:

        def answers() -> bool:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).is_success
            return False

        wait_until(answers, 20, what="hypercorn to answer")
        with http_client(base_url=f"http://127.0.0.1:{port}") as kept:
            kept.get("/healthz").raise_for_status()
            held = open_slow_clients(port, 2, sends=b"", trickle=False)
            wait_until(
                lambda: kept_alive_metric(kept, "steplog_request_heads_pending") == 2,
                what="2 pending request heads",
            )
            for each in held:
                data, _how = read_until_closed(each.sock, timeout=HEADER_TIMEOUT + MARGIN)
                each.sock.close()
                assert data.startswith(b"HTTP/1.1 408 "), data
            cut = kept_alive_metric(kept, "steplog_connections_cut_total", reason="header_timeout")
            assert cut == 2
    finally:
        stop_processes([process])
