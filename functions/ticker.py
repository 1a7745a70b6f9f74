"""`ticker`: a synthetic function for demos, tests and benchmarks.

It emits `count` progress events `interval_ms` apart, each optionally carrying
`payload_bytes` of filler, and fails on purpose at tick `fail_at` when asked.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from functions.context import Context
from functions.registry import function


class TickerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(10, ge=0, le=10_000_000, description="progress events to emit")
    interval_ms: int = Field(500, ge=0, le=3_600_000, description="pause between events")
    payload_bytes: int = Field(0, ge=0, le=1_000_000, description="filler carried by each event")
    fail_at: int | None = Field(None, ge=1, description="raise at this tick (1-based)")


class TickerFailed(Exception):
    """The ticker failed where it was asked to."""


@function("ticker", params=TickerParams, steps=("tick",))
async def ticker(ctx: Context, params: TickerParams) -> dict[str, Any]:
    """Count from 1 to `count`, reporting each tick as progress."""
    payload = "x" * params.payload_bytes
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with ctx.step("tick", f"ticking {params.count} times"):
        for tick in range(1, params.count + 1):
            if params.fail_at == tick:
                raise TickerFailed(f"failing at tick {tick} as asked (fail_at={params.fail_at})")
            data: dict[str, Any] = {"tick": tick}
            if payload:
                data["payload"] = payload
            await ctx.progress(100 * tick / params.count, f"tick {tick}/{params.count}", data)
            if params.interval_ms:
                # Keep to the schedule (tick n at n * interval), so the time an append
                # takes does not slow the rate down: 50 ms means 20 events/s.
                due = start + tick * params.interval_ms / 1000
                await asyncio.sleep(max(0.0, due - loop.time()))
    return {"ticks": params.count}
