"""Test-only functions that write caller-given text into a run's stream.

Loaded into a real server with `STEPLOG_FUNCTIONS=tests.server.echo_functions`.
`echo` is async; `echo_sync` is a plain `def`, so the worker runs it in a thread
with a `SyncContext` (the threadpool bridge). Both return datetimes, which the
log must turn into strings rather than fail on.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from functions.context import Context, SyncContext
from functions.registry import function


class EchoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[str] = Field(default_factory=list, max_length=100)
    fail_with: str | None = None
    """Raise inside the step with this text, after echoing every message."""


class EchoFailed(Exception):
    """The echo function failed where it was asked to."""


@function("echo", params=EchoParams, max_attempts=1)
async def echo(ctx: Context, params: EchoParams) -> dict[str, Any]:
    """Log every message as given, each with a datetime in its data."""
    for index, message in enumerate(params.messages):
        await ctx.log(message, data={"index": index, "text": message, "when": datetime.now(UTC)})
    if params.fail_with is not None:
        raise EchoFailed(params.fail_with)
    return {"echoed": len(params.messages), "finished_at": datetime.now(UTC)}


@function("echo_sync", params=EchoParams, max_attempts=1)
def echo_sync(ctx: SyncContext, params: EchoParams) -> dict[str, Any]:
    """The same from a worker thread: a step, progress and a log line per message."""
    total = max(len(params.messages), 1)
    with ctx.step("echo", "echoing from a thread"):
        for index, message in enumerate(params.messages):
            ctx.progress(100 * (index + 1) / total, message, {"when": datetime.now(UTC)})
            ctx.log(message, {"index": index})
        if params.fail_with is not None:
            raise EchoFailed(params.fail_with)
    return {
        "echoed": len(params.messages),
        "in_worker_thread": threading.current_thread() is not threading.main_thread(),
        "finished_at": datetime.now(UTC),
    }
