"""The tail hub: one reader of the log per process, fanning frames out to subscribers.

Readers never poll per subscriber. The hub waits for "something was committed
in this process" (the log's commit listener) or "the poll interval passed"
(which is how commits from other processes on the same database arrive), then
reads every event after its cursor once, encodes each event once per stream
kind, and hands the same bytes to every subscriber of that run (and of the
global stream). The wake-up is only an optimisation; reading after the cursor
is what makes it correct.

A subscriber has a bounded buffer. One that cannot keep up overflows, is
disconnected, and resumes from the log when its client reconnects with
`Last-Event-ID` — a slow client never holds memory or slows anyone else.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Iterator

from storage import Event, EventLog, StorageClosed
from stream.frames import global_frame, run_frame

log = logging.getLogger("steplog.hub")

READ_BATCH = 2000


class Subscriber:
    """A bounded queue of (key, frame) pairs for one open stream."""

    __slots__ = ("closed", "items", "limit", "overflowed", "ready")

    def __init__(self, limit: int) -> None:
        self.items: collections.deque[tuple[int, bytes, bool]] = collections.deque()
        self.ready = asyncio.Event()
        self.limit = limit
        self.overflowed = False
        self.closed = False

    def push(self, key: int, frame: bytes, terminal: bool) -> None:
        if self.overflowed:
            return
        if len(self.items) >= self.limit:
            self.overflowed = True
            self.items.clear()
        else:
            self.items.append((key, frame, terminal))
        self.ready.set()

    def close(self) -> None:
        self.closed = True
        self.ready.set()

    def drain(self) -> list[tuple[int, bytes, bool]]:
        items = list(self.items)
        self.items.clear()
        self.ready.clear()
        return items


class TailHub:
    """Follows the log and fans each new event out to the streams that want it."""

    def __init__(self, events: EventLog, *, poll_interval: float, buffer: int) -> None:
        self.events = events
        self.poll_interval = poll_interval
        self.buffer = buffer
        self._runs: dict[str, set[Subscriber]] = {}
        self._global: set[Subscriber] = set()
        self._cursor = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped_slow = 0

    async def start(self) -> None:
        self._cursor = await self.events.head()
        self.events.add_commit_listener(self._on_commit)
        self._task = asyncio.create_task(self._follow(), name="steplog-tail-hub")

    async def stop(self) -> None:
        self.events.remove_commit_listener(self._on_commit)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for sub in self._all():
            sub.close()

    def _all(self) -> Iterator[Subscriber]:
        yield from self._global
        for subs in self._runs.values():
            yield from subs

    @property
    def open_streams(self) -> int:
        return len(self._global) + sum(len(s) for s in self._runs.values())

    @contextlib.contextmanager
    def subscribe(self, run_id: str | None) -> Iterator[Subscriber]:
        """Receive the frames of one run (or of every run with `None`) while inside."""
        sub = Subscriber(self.buffer)
        group = self._global if run_id is None else self._runs.setdefault(run_id, set())
        group.add(sub)
        try:
            yield sub
        finally:
            group.discard(sub)
            if run_id is not None and not group:
                self._runs.pop(run_id, None)
            if sub.overflowed:
                self.dropped_slow += 1

    def _on_commit(self, pos: int) -> None:
        self._wake.set()

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow a cancel
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                while True:
                    batch = await self.events.read_all(self._cursor, READ_BATCH)
                    if not batch:
                        break
                    self._dispatch(batch)
                    self._cursor = batch[-1].pos
                    if len(batch) < READ_BATCH:
                        break
            except StorageClosed:
                return
            except Exception:
                log.exception("reading new events failed; retrying after the poll interval")

    def _dispatch(self, batch: list[Event]) -> None:
        runs, everyone = self._runs, self._global
        for event in batch:
            subs = runs.get(event.run_id)
            if subs:
                frame = run_frame(event)
                for sub in subs:
                    sub.push(event.seq, frame, event.terminal)
            if everyone:
                frame = global_frame(event)
                for sub in everyone:
                    sub.push(event.pos, frame, False)
