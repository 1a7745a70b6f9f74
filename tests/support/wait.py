"""The one way a test waits: poll a condition against a deadline, never a fixed sleep.

A sleep as synchronisation is either too short on a busy machine (a flaky test) or
too long everywhere (a slow suite). Polling a condition is neither; and when the
deadline passes, the failure names what was awaited and the last value seen, so a
red test says what did not happen instead of "condition not met".

`wait_until` is for plain code (tests against a server subprocess); `wait_for` is
its twin for code on an event loop, where a blocking sleep would stall the very
work being waited for.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def _timed_out(what: str, timeout: float, last: object) -> AssertionError:
    return AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = 10.0,
    *,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Call `predicate` until it returns something truthy and return that.

    The predicate is called at least once, and once more at the deadline, so a
    condition that holds just in time is not reported as a timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, last)
        time.sleep(interval)  # the polling interval inside a deadline, not synchronisation


async def wait_for(
    predicate: Callable[[], Awaitable[T | None]] | Callable[[], T | None],
    timeout: float = 10.0,
    *,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """`wait_until` on an event loop: `predicate` may be a coroutine function or a plain
    one (a check of in-process state that other tasks change while this one sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, last)
        await asyncio.sleep(interval)  # the polling interval, yielding to the awaited work
