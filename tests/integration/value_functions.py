"""Test-only functions that hand the log values it cannot take as they are.

Loaded into a real server with `STEPLOG_FUNCTIONS=tests.integration.value_functions`
(beside the built-in `ticker`). The values are built here, in the server's
process, since no HTTP request can carry a lone surrogate into a function's
events.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field

from functions.context import Context
from functions.registry import function
from storage import EventType


class PoisonParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tickers: int = Field(3, ge=0, le=100)
    """Keep going until this many `ticker` runs exist and all of them have ended."""
    max_seconds: float = Field(60.0, gt=0, le=600)


@function("poison", params=PoisonParams, max_attempts=1)
async def poison(ctx: Context, params: PoisonParams) -> None:
    """Emit lone surrogates in message, step and data, in a loop, each beside a good
    line, for as long as the tickers run; then let one refusal propagate."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + params.max_seconds
    refused = rounds = 0
    await ctx.log("poisoning")
    while loop.time() < deadline and not await _tickers_done(ctx, params.tickers):
        outcomes = await asyncio.gather(
            ctx.log("lone \ud800 surrogate"),
            ctx.log("in data", data={"text": ["fine", "\udfff"]}),
            ctx.emit(EventType.STEP_PROGRESS, step="step \udc80", pct=1),
            ctx.log(f"between, round {rounds}"),
            return_exceptions=True,
        )
        refused += sum(isinstance(outcome, Exception) for outcome in outcomes)
        rounds += 1
    await ctx.log(f"{refused} appends refused in {rounds} rounds", data={"refused": refused})
    await ctx.log("the last one \ud800, not caught")  # InvalidEvent: fails the run


async def _tickers_done(ctx: Context, count: int) -> bool:
    runs = await ctx._events.list_runs(function="ticker")
    return len(runs) >= count and all(run.status.finished for run in runs)
