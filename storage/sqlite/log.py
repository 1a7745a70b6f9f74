"""The embedded event log: SQLite in WAL mode through aiosqlite.

One writer task owns the only write connection (datasette's pattern). Writes
are queued as operations; the writer takes everything queued, applies it in a
single `BEGIN IMMEDIATE` transaction (group commit), commits, and only then
resolves each caller's future and tells the commit listeners. So an append is
acknowledged only once durable, and a reader is only woken for committed rows.

Readers use a small pool of separate connections in autocommit mode: a read
never holds a transaction open while a stream waits, which would starve WAL
checkpoints.

Other processes on the same file (`steplog serve --processes N`, `steplog
worker`) are rung right after each commit, from the writer's thread, through the
doorbell (storage/doorbell.py); a ring received calls the commit listeners (and
the work listeners) exactly as this process's own commits do.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import aiosqlite

from storage import chain
from storage.doorbell import WORK, Doorbell, bell_directory
from storage.errors import SteplogError, StorageClosed, StorageFull
from storage.model import Event, Run
from storage.sqlfiles import SQLITE as Q
from storage.sqlite import migrations, operations
from storage.sqlite.batch import Batch, Known, Operation
from storage.sqlite.dbfile import create_private, use_wal
from storage.sqlite.errors import translate
from storage.sqlite.fullness import DiskWatch
from storage.sqlite.rows import run_from_row
from storage.sqlite.space import FreeSpace
from storage.writer import commits
from storage.writer.queued import STOP, Operations, QueuedLog, makes_work

log = logging.getLogger("steplog.storage")

T = TypeVar("T")

WAL_CHECKPOINT_PAGES = 10_000
"""Checkpoint once the WAL holds this many pages (about 40 MiB), not SQLite's 1,000.

Busy runs rewrite the same few pages (their `(run_id, seq)` index leaves, the runs
table) in every group commit, and a checkpoint copies each page once however many
versions the WAL holds: ten times fewer checkpoints copy about the same pages each,
so appends spend far less time in the checkpoints that run inside `COMMIT`
(64 emitters: about +20% appends/s in `make bench`)."""
WAL_SIZE_LIMIT = 64 * 2**20
"""Bytes the WAL file is cut back to after a checkpoint, should a long read have let
it grow past that."""
DEFAULT_MIN_FREE = 64 * 2**20
"""Free bytes below which new runs are refused and the WAL is cut back every second
(STEPLOG_MIN_FREE_MB)."""


class SQLiteEventLog(QueuedLog):
    """The event log in one SQLite file (WAL, group commit, hash chain)."""

    ops: ClassVar[Operations] = operations

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        readers: int = 4,
        clock: Callable[[], float] = time.time,
        min_free_bytes: int = DEFAULT_MIN_FREE,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.space = FreeSpace(self.path.parent, min_free_bytes)
        """Free space beside the file, looked at by the writer at most once a second."""
        self.disk = DiskWatch(self.path, self.space, clock)
        """Full and low disk: WAL checkpoints, the outage, the floor (writer thread)."""
        self.synchronous = synchronous
        self.clock = clock
        self._reader_count = readers
        self._writer_conn: sqlite3.Connection | None = None
        self._writer_thread: ThreadPoolExecutor | None = None
        self._readers: list[aiosqlite.Connection] = []
        self._next_reader = itertools.cycle([0])
        self._known: Known | None = None
        """The writer's view after its last commit (only touched on the writer thread)."""
        self.bell = Doorbell(bell_directory(self.path))
        """Rung after each commit; rings other processes on the file (storage/doorbell.py)."""

    def __repr__(self) -> str:
        return f"SQLiteEventLog({str(self.path)!r})"

    # -- lifecycle -------------------------------------------------------------
    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        create_private(self.path)
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="steplog-sqlite-writer")
        self._writer_conn = await self._in_writer(self._open_writer)
        self._readers = [await self._connect(read_only=True) for _ in range(self._reader_count)]
        self._next_reader = itertools.cycle(range(len(self._readers)))
        self._closed = False
        try:
            self.bell.open(self._on_ring)
        except OSError as exc:  # the polls still bring other processes' commits
            log.warning("no doorbell at %s (%s): other processes' commits arrive by polling",
                        self.bell.directory, exc)  # fmt: skip
        self._writer_task = asyncio.create_task(self._write_loop(), name="steplog-sqlite-writer")

    def _on_ring(self, head: int, flags: int) -> None:
        """Another process committed: wake whoever its commit concerns, as for our own."""
        commits.tell_listeners(self._listeners, head, log)
        if flags & WORK:
            self._tell_work()

    def _open_writer(self) -> sqlite3.Connection:
        """The only write connection, opened (and only ever used) on the writer thread."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        use_wal(conn)
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        # A WAL left large by a crash on a nearly full disk is cut back before anything
        # else is written, so a restart there starts with the room the WAL held.
        self.disk.checkpoint(conn)
        migrations.migrate(conn)
        self.space.look(force=True)
        self.disk.note_space(conn)
        return conn

    def storage_state(self) -> tuple[SteplogError | None, str]:
        return self.disk.state()

    async def _in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._writer_thread is not None
        return await asyncio.get_running_loop().run_in_executor(self._writer_thread, fn, *args)

    async def _connect(self, read_only: bool = False) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        await conn.execute("PRAGMA busy_timeout = 10000")
        await conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        await conn.execute("PRAGMA foreign_keys = ON")
        if read_only:
            await conn.execute("PRAGMA query_only = ON")
        return conn

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._stop_writer()
        self.bell.close()
        for conn in self._readers:
            await conn.close()
        if self._writer_conn is not None:
            await self._in_writer(self._writer_conn.close)
        if self._writer_thread is not None:
            self._writer_thread.shutdown(wait=True)
        self._readers = []
        self._writer_conn = None
        self._writer_thread = None

    # -- the writer ------------------------------------------------------------
    async def _write_loop(self) -> None:
        assert self._writer_conn is not None
        conn = self._writer_conn
        stopping = False
        while not stopping:
            ops, stopping = await commits.next_group(self._queue, STOP)
            if not ops:
                continue
            # The whole transaction runs on the writer thread in one hop; the futures
            # are resolved back here, on the event loop, only after the commit.
            batch = await self._in_writer(self._run_batch, conn, ops)
            for op in ops:
                op.settle()
            if batch is not None and batch.wrote_events:
                if self._observers:
                    commits.tell_observers(self._observers, ops, batch.added, log)
                commits.tell_listeners(self._listeners, batch.head_pos, log)
            if batch is not None and makes_work(ops):
                self._tell_work()

    def _run_batch(self, conn: sqlite3.Connection, ops: list[Operation[Any]]) -> Batch | None:
        """Apply `ops` (on the writer thread); None when they did not commit.

        A full disk fails the group with `StorageFull`, logged once per outage. Before
        trying again (now, and at every group while the disk stays full) the writer
        cuts the WAL back with a TRUNCATE checkpoint: the WAL may hold most of the
        disk, so freeing a few MB, or the checkpoint alone, gives a usable log at once.
        """
        checkpointed = self.disk.full_since is not None and self.disk.checkpoint(conn)
        try:
            try:
                batch = self._apply(conn, ops)
            except StorageFull:
                if checkpointed or not self.disk.checkpoint(conn):
                    raise
                batch = self._apply(conn, ops)
        except StorageFull as exc:
            self.disk.now_full(exc)
            for op in ops:
                op.fail(exc)
            return None
        if batch is not None:
            self.disk.committed()
            work = makes_work(ops)
            if batch.wrote_events or work:  # at once: before the callers hear back
                self.bell.ring(batch.head_pos, WORK if work else 0)
        self.disk.note_space(conn)
        return batch

    def _apply(self, conn: sqlite3.Connection, ops: list[Operation[Any]]) -> Batch | None:
        """Apply `ops` in one transaction; None when it rolled back. Raises `StorageFull`
        (nothing settled) when the disk is full.

        Should it fail otherwise while applying them, it is rolled back and they are
        applied once more, each in a savepoint of its own, so whatever one of them did
        wrong fails only its caller (see storage/writer/commits.py).
        """
        known, self._known = self._known, None  # whatever happens, it is rebuilt or dropped
        progress = commits.Progress()
        try:
            return self._transaction(conn, ops, known, progress, alone=False)
        except Exception as exc:
            error = translate(exc)
            if isinstance(error, StorageFull):
                raise error from None
            if not commits.worth_isolating(ops, progress):
                log.exception("write batch of %d operations failed", len(ops))
                for op in ops:
                    op.fail(exc)
                return None
            log.exception("write batch of %d operations failed; applying each on its own", len(ops))
        try:
            return self._transaction(conn, ops, None, commits.Progress(), alone=True)
        except Exception as exc:  # the whole transaction is gone: tell every caller
            error = translate(exc)
            if isinstance(error, StorageFull):
                raise error from None
            log.exception("write batch of %d operations failed again", len(ops))
            for op in ops:
                op.fail(exc)
            return None

    def _transaction(
        self,
        conn: sqlite3.Connection,
        ops: list[Operation[Any]],
        known: Known | None,
        progress: commits.Progress,
        *,
        alone: bool,
    ) -> Batch:
        """One `BEGIN IMMEDIATE` … `COMMIT`; rolled back if anything fails in it.

        `alone` gives every operation a savepoint of its own: one that fails is
        undone and its caller told, and the others commit.
        """
        batch = Batch(conn, self.clock)
        appends = [op for op in ops if op.appends]
        conn.execute(Q["begin_immediate"])
        try:
            if self.disk.full_since is not None:
                self.disk.give_leases_time(conn)
            batch.start(appends, known)
            progress.stage = "applying"
            if alone:
                run_ids = commits.appended_runs(appends)
                for op in ops:
                    failure = batch.apply_alone(op, run_ids)
                    if failure is not None:
                        log.error("%s failed on its own: %r", type(op).__name__, failure)
            else:
                for op in ops:
                    batch.apply(op)
                batch.flush()
            progress.stage = "committing"
            conn.execute(Q["commit"])
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute(Q["rollback"])
            raise
        # After a second pass the run states are read again next time (see `Known`).
        self._known = Known.after(batch, only_appends=not alone and len(appends) == len(ops))
        return batch

    # -- runs ------------------------------------------------------------------
    async def _find_run(self, run_id: str) -> Run | None:
        rows = await self._read(Q["get_run"], (run_id,))
        return run_from_row(rows[0]) if rows else None

    async def _runs_page(
        self, status: str | None, function: str | None, before: str | None, limit: int
    ) -> list[Run]:
        where, args = [], []
        if status:
            where.append("status = ?")
            args.append(status)
        if function:
            where.append("function = ?")
            args.append(function)
        if before:
            where.append("id < ?")
            args.append(before)
        sql = Q["list_runs"].format(where="WHERE " + " AND ".join(where) if where else "")
        rows = await self._read(sql, (*args, limit))
        return [run_from_row(row) for row in rows]

    async def _claimable(self, functions: Sequence[str]) -> bool:
        marks = ",".join("?" * len(functions))
        now = self.clock()
        rows = await self._read(Q["claimable"].format(marks=marks), (*functions, now, now))
        return bool(rows)

    async def read_run(self, run_id: str, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        rows = await self._read(Q["read_run"], (run_id, after_seq, limit))
        return [Event(*row) for row in rows]

    async def read_run_envelopes(
        self, run_id: str, after_seq: int = 0, limit: int = 1000
    ) -> list[tuple[int, str, str]]:
        # SQLite builds the envelope text while it steps the rows (without the GIL),
        # so a replay costs the event loop one string per event, not an object.
        rows = await self._read(Q["read_run_envelopes"], (run_id, after_seq, limit))
        return rows

    async def read_all(self, after_pos: int = 0, limit: int = 1000) -> list[Event]:
        rows = await self._read(Q["read_all"], (after_pos, limit))
        return [Event(*row) for row in rows]

    async def head(self) -> int:
        rows = await self._read(Q["head"], ())
        return int(rows[0][0])

    async def _stored_secret(self, key: str) -> bytes | None:
        rows = await self._read(Q["get_secret"], (key,))
        return bytes(rows[0][0]) if rows else None

    async def run_counts(self) -> dict[str, int]:
        rows = await self._read(Q["run_counts"], ())
        return {status: int(count) for status, count in rows}

    async def _read(self, sql: str, args: Sequence[Any]) -> list[Any]:
        if self._closed:
            raise StorageClosed()
        conn = self._readers[next(self._next_reader)]
        return list(await conn.execute_fetchall(sql, args))


__all__ = ["SQLiteEventLog", "chain"]
