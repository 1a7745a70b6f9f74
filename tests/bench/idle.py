"""Idle open streams and what they cost the server: shared by the memory benchmark
(`tests.bench.storage`) and the capacity one (`tests.bench.capacity`).

A stream is idle once the server has sent its first bytes (`retry:`, before any
replay) and nothing more comes: a quiet run's stream, which is what a viewer of a
queued or sleeping run holds open.
"""

from __future__ import annotations

import asyncio

from tests.bench import client as bench_client
from tests.bench.common import CONNECT_CONCURRENCY, HOST, BenchError, _auth, _rss_bytes
from tests.support.launcher import ServerProcess

WARMUP = 50
"""Streams opened before the first RSS reading (allocator arenas, first-use caches)."""


class IdleStreams:
    """Streams of one path on `server`, opened in batches and closed together."""

    def __init__(self, server: ServerProcess, path: str) -> None:
        self.server = server
        self.path = path
        self.opened: list[bench_client.Response] = []
        self._connect = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def __aenter__(self) -> IdleStreams:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for response in self.opened:
            response.close()

    async def open(self, n: int) -> None:
        """Open `n` more streams; each counts once its first bytes have arrived."""
        await asyncio.gather(*(self._open_one() for _ in range(n)))

    async def _open_one(self) -> None:
        server, path = self.server, self.path
        async with self._connect:
            response = await bench_client.get(HOST, server.port, path, _auth(server), timeout=60)
        self.opened.append(response)
        if response.status != 200:
            raise BenchError(f"GET {path} answered {response.status}")
        body = b""
        while b"retry:" not in body:  # the first bytes of every stream
            chunk = await asyncio.wait_for(response.read(), 60)
            if chunk is None:
                raise BenchError("an idle stream ended")
            body += chunk


async def settled_rss(pid: int, settle: float) -> int:
    """The process's RSS after `settle` seconds: the server finishes the replay reads
    the streams just opened have started (a benchmark's pause, not a test's wait)."""
    await asyncio.sleep(settle)
    return _rss_bytes(pid)
