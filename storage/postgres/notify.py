"""Wake-ups from other processes: one LISTEN connection per log, reconnecting by itself.

Every write transaction that adds events sends `NOTIFY <channel>, '<head pos>'`;
PostgreSQL delivers it only if and when that transaction commits. The watcher
turns each notification from another backend into a commit-listener call, so a
`TailHub` in an API process wakes as soon as a worker process commits.

NOTIFY is a wake-up, never the source of truth: a notification can be missed
while the connection is down, so after every (re)connect, and every
`poll_interval` seconds as a safety net, the watcher reads the head itself and
reports it if it moved. That poll doubles as a liveness check of the listening
connection (a silent network drop surfaces as a timeout, then a reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from storage.sqlfiles import POSTGRES as QUERIES

log = logging.getLogger("steplog.storage.postgres")

MAX_RECONNECT_DELAY = 10.0


class CommitWatcher:
    """Reports heads committed by other processes to `on_commit`."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        channel: str,
        on_commit: Callable[[int], None],
        is_own: Callable[[int], bool],
        *,
        poll_interval: float,
        reconnect_delay: float = 0.2,
    ) -> None:
        self._connect = connect
        self.channel = channel
        self._on_commit = on_commit
        self._is_own = is_own
        self.poll_interval = poll_interval
        self.reconnect_delay = reconnect_delay
        self.known_head = 0
        self.pid: int | None = None
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="steplog-postgres-listen")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def note(self, head: int) -> None:
        """This process committed up to `head`: nothing to report for it later."""
        self.known_head = max(self.known_head, head)

    def _report(self, head: int) -> None:
        if head <= self.known_head:
            return  # already seen (our own commit, or a later head was reported)
        self.known_head = head
        self._on_commit(head)

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        if self._is_own(pid):
            return  # this process's writer told its listeners itself, right after COMMIT
        try:
            head = int(str(payload))
        except ValueError:
            log.warning("ignoring a malformed notification on %s: %r", channel, payload)
            return
        self._report(head)

    async def _run(self) -> None:
        delay = self.reconnect_delay
        while True:
            try:
                conn = await self._connect()
            except Exception as exc:
                log.warning("cannot open the LISTEN connection (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RECONNECT_DELAY)
                continue
            delay = self.reconnect_delay
            try:
                await self._listen(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("the LISTEN connection failed (%s); reconnecting", exc)
            finally:
                self.connected.clear()
                self.pid = None
                await _close(conn)

    async def _listen(self, conn: asyncpg.Connection) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(self.channel, self._on_notify)
        self.pid = conn.get_server_pid()
        self.connected.set()
        while not lost.is_set():
            # Listening before this read means nothing committed in between is lost.
            head = await conn.fetchval(QUERIES["head"], timeout=max(self.poll_interval, 5.0))
            self._report(int(head))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), self.poll_interval)
        log.warning("the LISTEN connection was closed by the server; reconnecting")


async def _close(conn: asyncpg.Connection) -> None:
    if conn.is_closed():
        return
    try:
        await asyncio.wait_for(conn.close(), 2.0)
    except Exception:
        conn.terminate()
