"""A test-only function that fills a run's stream with many events quickly.

Loaded into a real server with `STEPLOG_FUNCTIONS=tests.server.flood_functions`.
`flood` appends `count` log events, many at a time so that group commit writes them
in large transactions (20,000 events in about a second, where a ticker appending one
by one takes ten), then, if asked, stays live and ticks until it is cancelled.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from functions.context import Context
from functions.registry import function

BATCH = 500
"""Appends in flight at once: enough for group commit to fill its transactions."""


class FloodParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(20_000, ge=0, le=200_000, description="log events to append")
    pad: int = Field(100, ge=0, le=10_000, description="filler characters in each event")
    tick_ms: int | None = Field(
        None, ge=10, description="then stay live, one event per tick_ms, until cancelled"
    )


@function("flood", params=FloodParams, max_attempts=1)
async def flood(ctx: Context, params: FloodParams) -> dict[str, Any]:
    """Append `count` events, `BATCH` appends in flight at a time; then tick if asked."""
    filler = "x" * params.pad
    for start in range(0, params.count, BATCH):
        stop = min(start + BATCH, params.count)
        await asyncio.gather(*(ctx.log(f"line {i}", {"pad": filler}) for i in range(start, stop)))
    await ctx.log("flooded", {"count": params.count})
    if params.tick_ms is not None:
        while True:
            await asyncio.sleep(params.tick_ms / 1000)
            await ctx.log("tick")
    return {"count": params.count}
