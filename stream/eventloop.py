"""The event loop `steplog serve` and `steplog worker` run on: uvloop where it is installed.

The fan-out's cost is mostly the event loop's own: one future, one task step and
one socket write per subscriber per event. uvloop does those in C (libuv), which
the benchmark shows as a lower commit-to-receipt latency under 1,000 subscribers
(`make bench`, "live fan-out"). `STEPLOG_EVENT_LOOP=asyncio` chooses the standard
loop instead, e.g. to rule uvloop out when chasing a problem.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

CHOICES = ("uvloop", "asyncio")

LoopFactory = Callable[[], asyncio.AbstractEventLoop] | None
"""What `asyncio.Runner` takes as `loop_factory` (None: the standard loop)."""


def loop_factory(choice: str | None = None) -> LoopFactory:
    """The factory for `asyncio.run`: uvloop's unless `asyncio` is asked for or it is missing."""
    choice = (choice or os.environ.get("STEPLOG_EVENT_LOOP") or "uvloop").strip().lower()
    if choice not in CHOICES:
        raise ValueError(f"STEPLOG_EVENT_LOOP must be one of {', '.join(CHOICES)}, not {choice!r}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # a platform without it (Windows): the standard loop
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], factory: Callable[[], asyncio.AbstractEventLoop] | None) -> T:
    """`asyncio.run(main)` on the loop `factory` makes (None: the standard one)."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
