"""The shared event log: PostgreSQL through asyncpg, for many processes on many machines.

Same contract as the SQLite backend, same group commit: one writer task per
process owns one connection, takes everything queued, applies it in one
transaction, commits, and only then answers each caller and tells the commit
listeners (commit, then notify, then send). Reads (storage/postgres/reads.py)
use a separate small pool and never hold a transaction open.

How the global stream stays gap-free (`read_all(after_pos)` never skips)
-----------------------------------------------------------------------
With ids from a sequence, PostgreSQL makes rows visible in *commit* order, not
id order: transaction A takes pos 7, B takes pos 8, B commits, a reader reads
"after 6", gets 8 and moves its cursor to 8; then A commits 7, which that
reader never sees. steplog instead serialises appends in commit order:

    BEGIN ISOLATION LEVEL READ COMMITTED
    steplog_lock_for_append(key, run ids)     -- one VOLATILE function call:
        pg_advisory_xact_lock(key)            --   one writer transaction at a time
        SELECT pos, hash … ORDER BY pos DESC  --   the chain head (a new snapshot)
        SELECT … FROM runs … FOR UPDATE       --   the per-run lock
    INSERT events (pos = head + 1, + 2, …; hashes chained from the head), UPDATE runs
    SELECT pg_notify(<channel>, '<new head>'); COMMIT   -- releases the lock

Why this is correct: a transaction-level advisory lock is released only after
its commit is visible to new snapshots (PostgreSQL ends the transaction in the
proc array before releasing locks). So the next holder's head read — a new
snapshot, taken after the lock was granted, because in READ COMMITTED a
VOLATILE function takes one per statement inside it — sees the previous
holder's rows, and its pos values are all larger. Hence of any two appending
transactions, the one with the lower pos committed (became visible) first, and
any snapshot that shows pos p also shows every pos < p. A reader paging by
`pos > cursor` can therefore never skip a row, however late a transaction
commits: a late commit simply holds every later append back until it is done.
A rolled-back transaction consumed nothing, so pos has no gaps either. The
same lock makes the chain head read consistent (one chain, no forks) and,
since every write transaction takes it first, writers never deadlock on run
rows.

Throughput comes from group commit: while one process holds the lock, its
peers' writers keep queueing, and each then commits everything it gathered in
one transaction (one `unnest` INSERT). The cost is that appends from all
processes share one commit stream (fsync) — the price of one totally ordered,
hash-chained log; see storage/postgres/README.md. A group of plain appends
usually needs only one round trip, `steplog_append_batch`, which does all of
the above in one function call checked against the writer's cache
(storage/postgres/cached.py).

A lost connection during COMMIT leaves the outcome unknown (as with any remote
database): the caller gets `StorageUnavailable` and the event may or may not be
in the log; a worker's retry then continues from what the log holds. (For the
one-statement way the writer finds the outcome out instead: `_transaction`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import asyncpg

from storage.errors import SteplogError
from storage.interface import CommitListener
from storage.postgres import migrations, operations
from storage.postgres.batch import Batch, Operation
from storage.postgres.cached import InDoubt, Sent, WriterCache, short_way
from storage.postgres.errors import is_connection_error, is_disk_full, translate
from storage.postgres.notify import CommitWatcher
from storage.postgres.reads import PostgresReads
from storage.postgres.sessions import (
    SESSION_SETTINGS,
    channel_name,
    prepare_writer,
    redacted,
    writer_settings,
)
from storage.sqlfiles import POSTGRES as QUERIES
from storage.writer import commits
from storage.writer.queued import STOP, Operations

log = logging.getLogger("steplog.storage.postgres")


class PostgresEventLog(PostgresReads):
    """The event log in a PostgreSQL database (group commit, hash chain, LISTEN/NOTIFY)."""

    ops: ClassVar[Operations] = operations

    def __init__(
        self,
        url: str,
        *,
        readers: int = 4,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 1.0,
        migrate: bool = True,
        idle_limit: float = 15.0,
        before_commit: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`url` is a libpq-style URL; `?search_path=schema` selects a schema.

        `poll_interval` is the safety-net check for commits from other processes
        when a NOTIFY was missed. `idle_limit` is how long the server lets a
        write transaction sit idle before ending it (see `sessions.writer_settings`); the
        writer itself never pauses inside one. `before_commit` is awaited inside
        every write transaction just before COMMIT: tests use it to make commits
        late.
        """
        super().__init__()
        self.url = url
        self.clock = clock
        self.poll_interval = poll_interval
        self._readers = readers
        self._migrate = migrate
        self._idle_limit_ms = str(max(1, int(idle_limit * 1000)))
        self._before_commit = before_commit
        self._pool: asyncpg.Pool | None = None
        self._writer_conn: asyncpg.Connection | None = None
        self._lock_key = 0
        self._channel = ""
        self._watcher: CommitWatcher | None = None
        self._cache = WriterCache()
        """The head and runs as the last commit left them: the short way (cached.py)."""
        self._committed_head = 0
        """The head of this writer's last commit that added events."""
        self._disk_full = False
        """The last write failed with SQLSTATE 53100: logged once until one commits."""

    def __repr__(self) -> str:
        return f"PostgresEventLog({redacted(self.url)!r})"

    # -- lifecycle -------------------------------------------------------------
    async def open(self) -> None:
        conn: asyncpg.Connection | None = None
        try:
            conn = await self._connect_writer()
            if self._migrate:
                await migrations.migrate(conn)
            elif await migrations.current(conn) != migrations.latest():
                raise SteplogError("the database schema is not up to date: run `steplog migrate`")
            self._lock_key = await conn.fetchval(QUERIES["append_lock_key"])
            self._channel = channel_name(await conn.fetchval(QUERIES["current_schema"]))
            await prepare_writer(conn)
            self._pool = await asyncpg.create_pool(
                self.url, min_size=0, max_size=self._readers, server_settings=SESSION_SETTINGS
            )
        except Exception as exc:
            if conn is not None:
                conn.terminate()
            raise translate(exc) from exc
        self._writer_conn = conn
        self._closed = False
        self._writer_task = asyncio.create_task(self._write_loop(), name="steplog-pg-writer")
        if self._listeners:
            self._start_watcher()

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.url, server_settings=SESSION_SETTINGS)

    async def _connect_writer(self) -> asyncpg.Connection:
        settings = writer_settings(self._idle_limit_ms)
        return await asyncpg.connect(self.url, server_settings=settings)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._stop_writer()
        if self._watcher is not None:
            await self._watcher.stop()
            self._watcher = None
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), 10.0)
            except TimeoutError:
                self._pool.terminate()
            self._pool = None
        if self._writer_conn is not None:
            with contextlib.suppress(Exception):
                await self._writer_conn.close()
            self._writer_conn = None

    def _start_watcher(self) -> None:
        """Open the LISTEN side; only once somebody wants to be woken (saves a connection)."""
        self._watcher = CommitWatcher(
            self._connect,
            self._channel,
            self._tell_listeners,
            self._is_writer_pid,
            poll_interval=self.poll_interval,
        )
        # Our own commits so far were told to nobody and are not news to a new
        # listener: only a head beyond them is (another process's commit).
        self._watcher.note(self._committed_head)
        self._watcher.start()

    def _is_writer_pid(self, pid: int) -> bool:
        return pid == self.writer_pid

    @property
    def writer_pid(self) -> int | None:
        """The server process id of the writer's connection (for tests and diagnostics)."""
        conn = self._writer_conn
        return None if conn is None or conn.is_closed() else conn.get_server_pid()

    @property
    def watcher(self) -> CommitWatcher | None:
        """The LISTEN side, once a commit listener exists (for tests and diagnostics)."""
        return self._watcher

    # -- the writer ------------------------------------------------------------
    async def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            ops, stopping = await commits.next_group(self._queue, STOP)
            if not ops:
                continue
            batch = await self._run_batch(ops)
            if batch is not None and batch.wrote_events:
                if self._observers:
                    commits.tell_observers(self._observers, ops, batch.added, log)
                self._committed_head = batch.head_pos
                if self._watcher is not None:
                    self._watcher.note(batch.head_pos)
                self._tell_listeners(batch.head_pos)

    def _tell_listeners(self, head: int) -> None:
        """Wake this process's listeners: after its own commits, and (through the
        watcher) after every other process's."""
        commits.tell_listeners(self._listeners, head, log)

    async def _writer(self) -> asyncpg.Connection:
        """The writer's connection, reopened after a loss."""
        if self._writer_conn is None or self._writer_conn.is_closed():
            conn = await self._connect_writer()
            await prepare_writer(conn)
            self._writer_conn = conn
        return self._writer_conn

    async def _run_batch(self, ops: list[Operation[Any]]) -> Batch | None:
        """Apply `ops` in one transaction; return the committed batch, None if it failed.

        Every caller is answered (`settle`) before this returns, so commit observers
        can tell the appends acknowledged from those refused.

        Plain appends go the short way when the writer's cache allows (one statement:
        storage/postgres/cached.py), else the long way (`_transaction`).

        A connection found dead before COMMIT was sent (say, closed by a server
        restart while idle) certainly committed nothing, so the batch is run once
        more on a fresh connection instead of failing every caller. So is a group
        whose short-way statement lost its connection, after finding out under the
        append lock whether it committed (`Sent`). A transaction that failed
        otherwise while applying the operations is run once more with a savepoint
        per operation, so whatever one of them did wrong fails only its caller (see
        storage/writer/commits.py).
        """
        reconnected = alone = False
        in_doubt: Sent | None = None
        while True:
            progress = commits.Progress()
            try:
                batch = None if alone or in_doubt else await self._short_way(ops, progress)
                if batch is None:
                    batch = await self._transaction(ops, progress, alone=alone, in_doubt=in_doubt)
            except Exception as exc:  # the whole transaction is gone
                # Whatever failed, the connection's state is suspect: start afresh.
                self._cache.forget()
                await self._drop_writer()
                if isinstance(exc, InDoubt):
                    if not reconnected:
                        log.warning("writer connection lost (%s) appending in one statement;"
                                    " finding out whether it committed", exc.cause)  # fmt: skip
                        reconnected, in_doubt = True, exc.sent
                        continue
                    exc = exc.cause
                lost = is_connection_error(exc)
                if lost and not reconnected and not progress.committing:
                    log.warning("writer connection lost (%s); retrying the batch", exc)
                    reconnected = True
                    continue
                full = is_disk_full(exc)
                if not lost and not full and not alone and commits.worth_isolating(ops, progress):
                    log.exception(
                        "write batch of %d operations failed; applying each on its own", len(ops)
                    )
                    alone = True
                    continue
                if full:
                    if not self._disk_full:
                        log.error("PostgreSQL's disk is full (%s): writes get 503 storage_full"
                                  " until space is freed", exc)  # fmt: skip
                    self._disk_full = True
                elif lost:
                    log.warning("write batch of %d operations failed: %s", len(ops), exc)
                else:
                    log.exception("write batch of %d operations failed", len(ops))
                error = translate(exc)
                for op in ops:
                    op.fail(error)
                return None
            if self._disk_full:
                self._disk_full = False
                log.warning("PostgreSQL takes writes again after its disk was full")
            self._cache.remember(batch)
            for op in ops:
                op.settle()
            return batch

    async def _short_way(
        self, ops: list[Operation[Any]], progress: commits.Progress
    ) -> Batch | None:
        """The group in one statement (`cached.short_way`), or None for the long way."""
        if self._before_commit is not None:
            return None  # a late commit needs a transaction to hold open (tests)
        conn = await self._writer()
        where = (self._lock_key, self._channel)
        return await short_way(self._cache, conn, ops, progress, self.clock, *where)

    async def _transaction(
        self,
        ops: list[Operation[Any]],
        progress: commits.Progress,
        *,
        alone: bool = False,
        in_doubt: Sent | None = None,
    ) -> Batch:
        """One write transaction in as few round trips as possible: every one of them
        is spent holding the append lock that all processes share.

        BEGIN; lock + head + run locks (one function call); the writes (one
        statement per flush); NOTIFY + COMMIT. Any failure leaves the transaction
        open; the caller drops the connection, which makes the server roll it back.
        `alone` gives every operation a savepoint (and its own flush): one that
        fails is undone and its caller told, and the others commit.

        `in_doubt`: a short-way statement for `ops` lost its connection; once the
        lock is held it is known whether it committed (see `Sent`). If it did, the
        group is answered as it was numbered; otherwise it is applied anew.
        """
        progress.stage = "starting"  # the short way may have got further before giving up
        conn = await self._writer()
        await conn.execute(QUERIES["begin_append"])
        batch = Batch(conn)
        appends = [op for op in ops if op.appends]
        await batch.start(self._lock_key, appends)
        if in_doubt is not None and await in_doubt.committed(conn):
            log.warning("the group of %d appends had committed; answering it", len(ops))
            progress.stage = "committing"
            await conn.execute(QUERIES["commit"])
            return in_doubt.batch
        # The time is read under the lock, so `at` follows commit order closely.
        batch.set_time(self.clock())
        progress.stage = "applying"
        if alone:
            run_ids = commits.appended_runs(appends)
            for op in ops:
                failure = await batch.apply_alone(op, run_ids)
                if failure is not None:
                    log.error("%s failed on its own: %s", type(op).__name__, failure)
        else:
            for op in ops:
                await batch.apply(op)
            await batch.flush()
        if self._before_commit is not None:
            await self._before_commit()
        progress.stage = "committing"  # from here on a failure may or may not have committed
        if batch.wrote_events:
            await conn.execute(
                QUERIES["notify_and_commit"].format(channel=self._channel, head=batch.head_pos)
            )
        else:
            await conn.execute(QUERIES["commit"])
        return batch

    async def _drop_writer(self) -> None:
        conn, self._writer_conn = self._writer_conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    # -- wake-ups --------------------------------------------------------------
    def add_commit_listener(self, listener: CommitListener) -> None:
        """Be told after each commit in this process and, via NOTIFY, in every other."""
        super().add_commit_listener(listener)
        if self._watcher is None and not self._closed:
            self._start_watcher()


__all__ = ["PostgresEventLog"]
