"""The one clock the worker pool and the stream engine read time from.

Everything in them that waits or measures time (leases and heartbeats, idle
polling, run time limits; stream pings, lifetimes, the slow-stream watchdog,
the tail's poll) goes through a `Clock`, so a test can drive it by hand
(`tests/support/clock.py`) and check "a ping after 15 s of silence, not before"
or "a lease expires" in milliseconds, without waiting and without races.

Two readings, because they answer different questions: `monotonic()` for
intervals and deadlines inside one process (never jumps), `wall()` for what is
compared with timestamps other processes wrote (an event's `at`, a lease's expiry).

It lives in `functions/` because the worker pool is its lowest user: the stream
engine builds on `functions/` already, never the other way round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol


class Timer(Protocol):
    """A scheduled callback that can still be called off."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """Time, sleeping and timers for code that runs on an event loop."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back: for intervals and deadlines."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch: for comparing with times other processes wrote."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Call `callback` (on the loop) once `delay` seconds of this clock have passed."""
        ...

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[asyncio.Timeout]:
        """`asyncio.timeout` on this clock: the block is cancelled after `seconds`
        (never with None) and `TimeoutError` raised; `.expired()` says whether it was."""
        ...


class SystemClock:
    """The real clock: `time.monotonic` (the event loop's own clock), `time.time`,
    and the event loop's timers."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[asyncio.Timeout]:
        return asyncio.timeout(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK: Clock = SystemClock()
"""What everything uses unless a test hands it another clock."""
