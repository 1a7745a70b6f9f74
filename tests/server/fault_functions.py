"""Test-only functions that fail in the ways no worker slot may die of.

Loaded into a real server with `STEPLOG_FUNCTIONS=tests.server.fault_functions`.
`flaky` is an ordinary function whose writes a test makes the log refuse (with a
SQLite trigger); the others end in ways a function should not: `SystemExit` or
`KeyboardInterrupt` from a worker thread, `SystemExit` on the event loop, an
exception that is not an `Exception`, and a `CancelledError` nobody asked for.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict

from functions.context import Context, SyncContext
from functions.registry import function


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Oddity(BaseException):
    """Neither an `Exception` nor a signal: nothing a worker is written to expect."""


@function("flaky", params=Empty, max_attempts=10, steps=("work",))
async def flaky(ctx: Context, params: Empty) -> dict[str, Any]:
    """Three progress events in one step: what a test's trigger makes the log refuse."""
    async with ctx.step("work", "working"):
        for part in (1, 2, 3):
            await ctx.progress(part * 100 / 3, f"part {part} of 3")
    return {"parts": 3}


@function("exits_in_a_thread", params=Empty, max_attempts=1)
def exits_in_a_thread(ctx: SyncContext, params: Empty) -> None:
    """`sys.exit(3)` inside a step, from the worker thread a plain `def` runs in."""
    with ctx.step("leave", "leaving"):
        raise SystemExit(3)


@function("interrupted_in_a_thread", params=Empty, max_attempts=1)
def interrupted_in_a_thread(ctx: SyncContext, params: Empty) -> None:
    """A `KeyboardInterrupt` raised by the function itself (no signal was sent)."""
    ctx.log("about to interrupt myself")
    raise KeyboardInterrupt


@function("exits", params=Empty, max_attempts=1)
async def exits(ctx: Context, params: Empty) -> None:
    """`SystemExit` raised on the event loop, where it would stop the whole server."""
    await ctx.log("about to exit")
    raise SystemExit("leaving the event loop")


@function("raises_an_oddity", params=Empty, max_attempts=1)
async def raises_an_oddity(ctx: Context, params: Empty) -> None:
    """A `BaseException` subclass that is not an `Exception`, inside a step."""
    async with ctx.step("odd", "doing something odd"):
        raise Oddity("not an Exception")


@function("cancels_itself", params=Empty, max_attempts=1)
async def cancels_itself(ctx: Context, params: Empty) -> None:
    """Awaits a task it cancelled: a `CancelledError` that no cancel request caused."""
    await ctx.log("cancelling my own task")
    task = asyncio.create_task(asyncio.sleep(60))
    task.cancel()
    await task
