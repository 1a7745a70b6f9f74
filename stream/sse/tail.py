"""The tail: one follower of the log per process, fanning frames out to subscribers.

Streams never poll the log per subscriber. The tail waits for "something was
committed" (the log's commit listener: this process's commits, and other
processes' through NOTIFY on PostgreSQL or the doorbell on SQLite,
storage/doorbell.py) or "the poll interval passed" (the safety net), then
encodes each new event once per stream kind and hands the same bytes to every
subscriber of that run (and of the global stream).

Where the new events come from:

- **This process's commits** arrive in memory: the writer hands every commit's
  events to its commit observers (`EventLog.add_commit_observer`) right after the
  commit and before it wakes the listeners, so the tail dispatches them without
  reading back rows it has just written.
- **Other processes' commits** are read from the log after the tail's cursor.

The in-memory events are used only when they continue exactly where the tail's
cursor is (`pos` is gapless and in commit order): events at or below the cursor
were dispatched already and are skipped; a gap (another process committed in
between) stops the in-memory dispatch, and the read after the cursor fills it
(and reads past it). The tail reads whenever a head it was told of is beyond
its cursor, and at every poll. So the wake-up and the in-memory hand-over are
only optimisations: reading after the cursor is what makes the fan-out complete,
and a stream's own read after it subscribes is what makes each stream complete
(docs/architecture.md, "Subscribe, then read").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

from functions.clock import Clock
from storage import Event, EventLog, StorageClosed
from stream.http.metrics import Metrics
from stream.sse.frames import global_frame, run_frame
from stream.sse.subscriber import Subscriber

log = logging.getLogger("steplog.hub")

READ_BATCH = 2000

MAX_HANDED = 20_000
"""Events handed over in memory kept for the next wake-up at most; past it they are
let go and read back from the log (a tail that fell this far behind is busy anyway)."""


class Tail:
    """Follows the log and fans each new event out to the streams that want it."""

    def __init__(
        self,
        events: EventLog,
        *,
        poll_interval: float,
        buffer: int,
        clock: Clock,
        metrics: Metrics,
        on_slow: Callable[[str], None],
    ) -> None:
        self.events = events
        self.poll_interval = poll_interval
        self.buffer = buffer
        self.clock = clock
        self.metrics = metrics
        self._on_slow = on_slow
        self._runs: dict[str, set[Subscriber]] = {}
        self._global: set[Subscriber] = set()
        self._sets: dict[str, set[Subscriber]] = {}
        """Multiplexed streams (stream/sse/multi.py) by run: sent global frames of those runs."""
        self._subscriptions = 0
        self._cursor = 0
        """The last `pos` dispatched (or skipped while nobody watched)."""
        self._wake = asyncio.Event()
        self._committed = 0
        """The highest head the commit listener told of (this process's or another's)."""
        self._handed: list[Sequence[Event]] = []
        """This process's commits since the last wake-up, as the writer handed them over."""
        self._handed_count = 0
        self._observing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def cursor(self) -> int:
        return self._cursor

    async def start(self) -> None:
        self._cursor = await self.events.head()
        try:
            self.events.add_commit_observer(self._on_own_commit)
            self._observing = True
        except NotImplementedError:  # a backend that cannot hand events over: read them
            self._observing = False
        self.events.add_commit_listener(self._on_commit)
        self._task = asyncio.create_task(self._follow(), name="steplog-tail-hub")

    async def stop(self) -> None:
        self.events.remove_commit_listener(self._on_commit)
        if self._observing:
            self.events.remove_commit_observer(self._on_own_commit)
            self._observing = False
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._handed, self._handed_count = [], 0

    @property
    def following(self) -> bool:
        return self._task is not None and not self._task.done()

    def subscribers(self) -> Iterator[Subscriber]:
        yield from self._global
        for subs in self._runs.values():
            yield from subs
        seen: set[Subscriber] = set()
        for subs in self._sets.values():
            for sub in subs - seen:
                seen.add(sub)
                yield sub

    @contextlib.contextmanager
    def subscribe(self, run_id: str | None, sub: Subscriber | None = None) -> Iterator[Subscriber]:
        """Receive the frames of one run (or of every run with `None`) while inside.

        `sub` is an admitted stream; without one, an unpoliced subscriber is made
        (for in-process consumers and tests).
        """
        own = sub is None
        if sub is None:
            sub = Subscriber(self.buffer)
        group = self._global if run_id is None else self._runs.setdefault(run_id, set())
        self._subscriptions += 1  # see `_skip_unwatched`
        group.add(sub)
        try:
            yield sub
        finally:
            group.discard(sub)
            if run_id is not None and not group:
                self._runs.pop(run_id, None)
            if own and sub.overflowed:
                self._on_slow("buffer")

    @contextlib.contextmanager
    def subscribe_set(self, run_ids: frozenset[str], sub: Subscriber) -> Iterator[Subscriber]:
        """Receive the global frames (keyed by `pos`) of every run in `run_ids` while inside.

        What a multiplexed stream follows: one subscriber for a set of runs, each
        event's frame the one the global stream sends (encoded once for both).
        """
        self._subscriptions += 1  # see `_skip_unwatched`
        for run_id in run_ids:
            self._sets.setdefault(run_id, set()).add(sub)
        try:
            yield sub
        finally:
            for run_id in run_ids:
                group = self._sets.get(run_id)
                if group is not None:
                    group.discard(sub)
                    if not group:
                        del self._sets[run_id]

    # -- told by the writer ----------------------------------------------------
    def _on_own_commit(self, added: Sequence[Event], waits: Sequence[float]) -> None:
        """A commit of this process's writer, with its events (a commit observer).

        Runs in the writer's loop, so it only keeps a reference: the tail task does
        the work at its next wake-up (which the listener, told next, brings).
        """
        if not added:
            return
        if self._handed_count + len(added) > MAX_HANDED:
            self._handed, self._handed_count = [], 0  # read back instead (see MAX_HANDED)
            return
        self._handed.append(added)
        self._handed_count += len(added)

    def _on_commit(self, pos: int) -> None:
        if pos > self._committed:
            self._committed = pos
        self._wake.set()

    # -- the follower ------------------------------------------------------------
    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow a cancel
                async with self.clock.timeout(self.poll_interval):
                    await self._wake.wait()
            woken = self._wake.is_set()
            self._wake.clear()
            handed, self._handed, self._handed_count = self._handed, [], 0
            try:
                if await self._skip_unwatched(self._committed if woken else None):
                    continue
                if handed:
                    self._dispatch_handed(handed)
                if not woken or self._cursor < self._committed:
                    await self._read_after_cursor()
            except StorageClosed:
                return
            except Exception:
                log.exception("reading new events failed; retrying after the poll interval")

    async def _read_after_cursor(self) -> None:
        """Dispatch every committed event after the cursor, read from the log."""
        while True:
            batch = await self.events.read_all(self._cursor, READ_BATCH)
            if not batch:
                return
            self._observe_lag(batch[0])
            self._dispatch(batch)
            self._cursor = batch[-1].pos
            if len(batch) < READ_BATCH:
                return

    def _dispatch_handed(self, handed: list[Sequence[Event]]) -> None:
        """Dispatch the handed-over commits that continue the cursor, up to a gap."""
        lag_observed = False
        for added in handed:
            first, last = added[0].pos, added[-1].pos
            cursor = self._cursor
            if last <= cursor:
                continue  # read already (the read after a poll can overtake the hand-over)
            if first > cursor + 1:
                return  # another process committed in between: the read fills the gap
            fresh = added if first == cursor + 1 else added[cursor + 1 - first :]
            if not lag_observed:
                self._observe_lag(fresh[0])
                lag_observed = True
            self._dispatch(fresh)
            self._cursor = last

    async def _skip_unwatched(self, committed: int | None) -> bool:
        """With no stream open, move the cursor to the head instead of reading every event.

        Safe because a stream subscribes first and then reads the log itself up to
        now: if nobody subscribed while the head was read, no one can need the events
        up to it from the hub. This keeps a busy log with nobody watching cheap.
        Woken by a commit, the head the listener told of is used as is (no read per
        commit; a head another process rang is used the same way).
        """
        if self._runs or self._global or self._sets:
            return False
        if committed is not None:
            self._cursor = max(self._cursor, committed)
            return True
        subscriptions = self._subscriptions
        head = await self.events.head()
        if subscriptions != self._subscriptions or self._runs or self._global or self._sets:
            return False
        self._cursor = max(self._cursor, head)
        return True

    def _dispatch(self, batch: Sequence[Event]) -> None:
        runs, everyone, sets = self._runs, self._global, self._sets
        for event in batch:
            subs = runs.get(event.run_id)
            if subs:
                frame = run_frame(event)
                for sub in subs:
                    sub.push(event.seq, frame, event.terminal)
            multiplexed = sets.get(event.run_id) if sets else None
            if everyone or multiplexed:
                frame = global_frame(event)
                for sub in everyone:
                    sub.push(event.pos, frame, False)
                if multiplexed:
                    for sub in multiplexed:
                        sub.push(event.pos, frame, False)

    def _observe_lag(self, event: Event) -> None:
        """Seconds from the event's commit to its dispatch (0 if the clocks disagree)."""
        try:
            committed = datetime.fromisoformat(event.at).timestamp()
        except ValueError:
            committed = self.clock.wall()
        self.metrics.tail_lag.observe(max(0.0, self.clock.wall() - committed))
