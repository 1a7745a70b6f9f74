"""A `Clock` (functions/clock.py) that only moves when a test says so.

Timers and sleeps wait on the fake time; `advance` moves it forward, firing
every timer that falls due on the way in order, each at its own time, and lets
the event loop run what they woke (a watchdog pass, a ping, a heartbeat) before
the next one. So "nothing happens before 15 s, a ping at 15 s" is checked
without waiting 15 s and without guessing how long a real timer takes.

Work that leaves the event loop (a write on the SQLite writer thread) is not
finished by `advance`: wait for its outcome with a deadline, as any test does.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

TURNS = 20
"""Loop iterations `advance` lets run after each timer: enough for a woken task to
reach its next await (and arm its next timer) when it does no I/O on the way."""


@dataclass(order=True, slots=True)
class FakeTimer:
    when: float
    order: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Monotonic time starting at `start`; wall time `epoch` at the start, moving with it."""

    def __init__(self, start: float = 1000.0, epoch: float = 1_700_000_000.0) -> None:
        self._now = start
        self._offset = epoch - start
        self._timers: list[FakeTimer] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._offset

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self._now + max(0.0, delay), next(self._order), callback)
        heapq.heappush(self._timers, timer)
        return timer

    async def sleep(self, seconds: float) -> None:
        woken = asyncio.get_running_loop().create_future()
        timer = self.call_later(seconds, lambda: woken.done() or woken.set_result(None))
        try:
            await woken
        finally:
            timer.cancel()

    @contextlib.asynccontextmanager
    async def timeout(self, seconds: float | None) -> AsyncIterator[asyncio.Timeout]:
        async with asyncio.timeout(None) as scope:
            # Expire the real scope at once when the fake time is up: it then cancels
            # the block and raises TimeoutError exactly as `asyncio.timeout` does.
            timer = (
                None if seconds is None else self.call_later(seconds, lambda: scope.reschedule(0))
            )
            try:
                yield scope
            finally:
                if timer is not None:
                    timer.cancel()

    @property
    def timers(self) -> int:
        """Timers armed and not cancelled (a leak check)."""
        return sum(not timer.cancelled for timer in self._timers)

    async def advance(self, seconds: float) -> None:
        """Move the time `seconds` forward, firing what falls due on the way (in order)."""
        target = self._now + seconds
        while self._timers and self._timers[0].when <= target:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, timer.when)
            timer.callback()
            await turns()
        self._now = target
        await turns()


async def turns(count: int = TURNS) -> None:
    """Let the event loop run `count` iterations (what was woken runs; no time passes)."""
    for _ in range(count):
        await asyncio.sleep(0)
