"""Claims while PostgreSQL connections die: a claim that commits never orphans its run.

A claim commits the lease and `run.started` together. If the claimer then fails to
learn what it claimed (its next read fails, or the connection dies during COMMIT so
the outcome is unknown), nobody runs the run until its lease expires. Here the
steplog connections (the writer and the read pool, told apart from everyone else's
by their `application_name`) are terminated with `pg_terminate_backend` every
0.2 to 0.7 s from a separate connection, while runs are created and claimed the way
the worker pool's slots do (claim, or wait a poll interval). Every run must be
claimed, by a claimer that knows it, within a poll interval plus a margin of
becoming claimable: never after its lease expires. And no run is lost or doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import secrets
import struct
import time
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from storage import EventType, Run, SteplogError, StorageClosed
from storage.postgres.errors import StorageUnavailable
from storage.postgres.log import PostgresEventLog

RUNS = 80
CLAIMERS = 3
POLL = 0.2
LEASE = 60.0
MARGIN = 15.0
"""Generous for a busy machine, and still far below the lease: a run claimed later
than this waited for something other than a poll."""


async def kill_loop(admin: asyncpg.Connection, app: str, stop: asyncio.Event) -> int:
    """Terminate every connection of the log under test at random intervals."""
    rng = random.Random(11)
    killed = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(0.2, 0.7))
        killed += await admin.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
            "  FROM pg_stat_activity WHERE application_name = $1",
            app,
        )
    return killed


async def create_all(log: PostgresEventLog, created: dict[str, float]) -> None:
    """Create the runs one by one, as a sender retrying its deliveries would: the same
    idempotency key and params until an answer comes (an unknown outcome is retried)."""
    rng = random.Random(5)
    for i in range(RUNS):
        while True:
            try:
                run, _ = await log.create_run("ticker", {"n": i}, idempotency_key=f"run-{i}")
            except SteplogError:
                await asyncio.sleep(0.05)
                continue
            created.setdefault(run.id, time.monotonic())
            break
        await asyncio.sleep(rng.uniform(0.02, 0.15))


async def claimer(
    log: PostgresEventLog, worker: str, claims: dict[str, list[tuple[float, Run]]]
) -> int:
    """A worker slot: claim, or wait one poll interval (also after a failed claim)."""
    failures = 0
    while True:
        try:
            run = await log.claim_run(worker, LEASE, ["ticker"])
        except StorageClosed:
            return failures
        except SteplogError:
            failures += 1
            run = None
        if run is None:
            await asyncio.sleep(POLL)
            continue
        claims.setdefault(run.id, []).append((time.monotonic(), run))


@pytest.mark.timeout(240)
async def test_every_run_is_claimed_promptly_while_connections_are_killed(pg_url: str) -> None:
    app = f"steplog_claims_{secrets.token_hex(4)}"
    log = PostgresEventLog(f"{pg_url}&application_name={app}", readers=2)
    await log.open()
    admin = await asyncpg.connect(pg_url)
    stop = asyncio.Event()
    created: dict[str, float] = {}
    claims: dict[str, list[tuple[float, Run]]] = {}
    killer = asyncio.create_task(kill_loop(admin, app, stop))
    slots = [asyncio.create_task(claimer(log, f"w{i}", claims)) for i in range(CLAIMERS)]
    try:
        creator = asyncio.create_task(create_all(log, created))
        while not (creator.done() and set(claims) >= set(created)):
            now = time.monotonic()
            late = [
                run_id
                for run_id, at in created.items()
                if run_id not in claims and now - at > POLL + MARGIN
            ]
            assert not late, f"runs not claimed {POLL + MARGIN}s after they were created: {late}"
            assert not any(slot.done() for slot in slots), "a claimer died"
            await asyncio.sleep(0.05)
        await creator
        stop.set()
        killed = await killer
    finally:
        stop.set()
        await log.close()  # the slots end with StorageClosed
        failures = await asyncio.gather(*slots, return_exceptions=True)
        if not killer.done():
            killer.cancel()
        await admin.close()

    assert killed >= 10, f"only {killed} connections were killed: the test proved little"
    for run_id, at in created.items():
        first_claimed = claims[run_id][0][0]
        assert first_claimed - at <= POLL + MARGIN, run_id

    # Nothing lost, nothing doubled, and each run is leased to the claimer that got it last:
    # a claim whose outcome its claimer did not learn left no lease behind.
    check = PostgresEventLog(pg_url)
    await check.open()
    try:
        runs = await check.list_runs(limit=1000)
        assert len(runs) == RUNS and {run.id for run in runs} == set(created)
        for run in runs:
            _, last = claims[run.id][-1]
            assert (run.status, run.attempt, run.lease_owner) == (
                "running", last.attempt, last.lease_owner,
            ), (run, last)  # fmt: skip
            events = await check.read_run(run.id)
            started = [e for e in events if e.type == EventType.RUN_STARTED]
            assert started and started[-1].attempt == run.attempt
    finally:
        await check.close()
    print(f"\n{killed} connections killed; claim failures per slot: {failures}")


# -- a claim whose COMMIT succeeds but whose answer never arrives ---------------------------

COMMIT_QUERY = re.compile(rb"\bCOMMIT;?\s*\x00?$")
"""The text of a simple-query message that ends the transaction (not `READ COMMITTED`)."""


class CommitCutter:
    """A TCP proxy in front of PostgreSQL that, once armed, forwards the next COMMIT and
    then cuts its client's connection: the server commits, the client never hears."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.armed = False
        self.cut = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        down = asyncio.create_task(self._pump(up_reader, writer))
        self._tasks.add(down)
        down.add_done_callback(self._tasks.discard)
        try:
            (length,) = struct.unpack("!i", await reader.readexactly(4))  # the startup message
            up_writer.write(struct.pack("!i", length) + await reader.readexactly(length - 4))
            while True:
                kind = await reader.readexactly(1)
                (length,) = struct.unpack("!i", await reader.readexactly(4))
                body = await reader.readexactly(length - 4)
                up_writer.write(kind + struct.pack("!i", length) + body)
                await up_writer.drain()
                if self.armed and kind == b"Q" and COMMIT_QUERY.search(body):
                    self.armed = False
                    down.cancel()  # the server's answer is never relayed
                    await asyncio.wait([down])
                    writer.transport.abort()
                    await ready_for_query(up_reader)  # the server finished the COMMIT
                    self.cut.set()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            up_writer.close()
            writer.close()

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()


async def ready_for_query(reader: asyncio.StreamReader) -> None:
    """Read the server's messages up to its next ReadyForQuery (the statement is done)."""
    while True:
        kind = await reader.readexactly(1)
        (length,) = struct.unpack("!i", await reader.readexactly(4))
        await reader.readexactly(length - 4)
        if kind == b"Z":
            return


async def test_a_claim_committed_but_unanswered_gives_its_lease_back(pg_url: str) -> None:
    """The connection dies after the server committed the claim and before its answer
    arrived: the claimer cannot know it holds the lease, so the lease must be given back
    at once, not left to expire (30 s here) with nobody running the run."""
    cutter = CommitCutter(("127.0.0.1", 5432))
    port = await cutter.start()
    parts = urlsplit(pg_url)
    proxied = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}"))
    log = PostgresEventLog(f"{proxied}&sslmode=disable")
    await log.open()
    try:
        run, _ = await log.create_run("ticker", {"count": 1})
        cutter.armed = True
        with pytest.raises(StorageUnavailable):
            await log.claim_run("w1", 30, ["ticker"])
        await asyncio.wait_for(cutter.cut.wait(), 10)  # and the server did commit it
        # The claim did commit (attempt 1 started); its lease is free again.
        events = await log.read_run(run.id)
        assert [(e.type, e.attempt) for e in events][:2] == [
            (EventType.RUN_QUEUED, 0), (EventType.RUN_STARTED, 1),
        ]  # fmt: skip
        retaken = await log.claim_run("w2", 30, ["ticker"])
        assert retaken is not None and retaken.id == run.id
        assert (retaken.attempt, retaken.lease_owner) == (2, "w2")
    finally:
        await log.close()
        await cutter.stop()
