"""A server holds as many streams as it allows, whatever soft file limit it inherits.

Linux (and systemd) start processes with a soft limit of 1,024 descriptors; the
default stream cap is 10,000. The server raises its own soft limit at start-up,
so stream 1,100 gets its 200 and its events, not a reset connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.support.api import start_run
from tests.support.launcher import ServerProcess

STREAMS = 1_100
"""Past the usual soft limit of 1,024 descriptors."""

INHERITED_SOFT_LIMIT = 1_024


@contextlib.contextmanager
def soft_file_limit(limit: int) -> Iterator[None]:
    """Start children with this soft limit (they inherit it at fork), then restore ours."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < STREAMS + 512:
        pytest.skip(f"the hard open-file limit here is {hard}: too low to hold {STREAMS} streams")
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def max_open_files(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no 'Max open files' line in /proc/<pid>/limits")


async def open_streams(server: ServerProcess, path: str, count: int) -> list[bytes]:
    """`count` streams held open at once; what each one's response began with."""
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    heads: list[bytes] = []
    try:
        for _ in range(count):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            except OSError as exc:
                heads.append(f"connect failed: {exc}".encode())
                continue
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: steplog\r\n"
                f"Authorization: Bearer {server.api_key}\r\n\r\n".encode()
            )
            opened.append((reader, writer))
        for reader, _ in opened:
            try:
                heads.append(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30))
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                heads.append(f"no response: {exc!r}".encode())
        return heads
    finally:
        for _, writer in opened:
            writer.close()


def test_a_server_started_with_a_low_soft_limit_still_holds_its_streams(
    server_factory: ServerFactory,
) -> None:
    with soft_file_limit(INHERITED_SOFT_LIMIT):
        server = server_factory(ping_interval=30, max_streams=STREAMS + 100)
    assert server.process is not None
    assert max_open_files(server.process.pid) >= STREAMS + 100

    # A run that stays live for the whole test: every stream stays open at once.
    run_id = start_run(server, "ticker", count=2, interval_ms=600_000)["run_id"]
    heads = asyncio.run(open_streams(server, f"/runs/{run_id}/events", STREAMS))
    refused = [head for head in heads if not head.startswith(b"HTTP/1.1 200")]
    assert not refused, f"{len(refused)} of {STREAMS} streams failed; first: {refused[0][:120]!r}"
