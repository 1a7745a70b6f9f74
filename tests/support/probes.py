"""Probes of a running server from outside, as an operator or a hostile client sees it.

Its metrics as Prometheus scrapes them, its open sockets as `/proc` counts them,
and plain sockets for clients httpx cannot imitate (a head sent as raw bytes, a
tiny receive buffer, a read until the server hangs up).
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of `GET {url}/metrics` (0 when the series does not exist)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def open_sockets(pid: int) -> int:
    """How many sockets the process holds open (its file descriptors that are sockets)."""
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # closed while we looked
            count += os.readlink(fd).startswith("socket:")
    return count


def raw_request(port: int, head: bytes, *, rcvbuf: int | None = None) -> socket.socket:
    """A plain socket that sent `head` (for clients httpx cannot imitate)."""
    sock = socket.socket()
    if rcvbuf is not None:  # before connect, so the kernel does not grow it later
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.sendall(head)
    return sock


def read_response_head(sock: socket.socket, timeout: float = 10.0) -> tuple[int, bytes]:
    """Status and everything read until the end of the headers (plus what came with them)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data


def read_until_closed(sock: socket.socket, timeout: float = 15.0) -> tuple[bytes, str]:
    """Everything the socket still delivers, and how it ended: `eof` or `reset`."""
    sock.settimeout(timeout)
    data = bytearray()
    try:
        while chunk := sock.recv(1 << 20):
            data += chunk
    except ConnectionResetError:
        return bytes(data), "reset"
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open for {timeout}s") from None
    return bytes(data), "eof"
