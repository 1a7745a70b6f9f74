"""The event loop `steplog serve` and `steplog worker` run on: uvloop where it is installed.

The fan-out's cost is mostly the event loop's own: one future, one task step and
one socket write per subscriber per event. uvloop does those in C (libuv), which
the benchmark shows as a lower commit-to-receipt latency under 1,000 subscribers
(`make bench`, "live fan-out"). `STEPLOG_EVENT_LOOP=asyncio` chooses the standard
loop instead, e.g. to rule uvloop out when chasing a problem.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

LoopFactory = Callable[[], asyncio.AbstractEventLoop] | None
"""What `asyncio.Runner` takes as `loop_factory` (None: the standard loop)."""


def loop_factory(choice: str = "uvloop") -> LoopFactory:
    """The factory for `asyncio.Runner`: uvloop's for `uvloop` (the default setting,
    `Settings.event_loop`) where it is installed, else the standard loop's."""
    if choice != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:  # a platform without it (Windows): the standard loop
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], factory: LoopFactory) -> T:
    """`asyncio.run(main)` on the loop `factory` makes (None: the standard one)."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
