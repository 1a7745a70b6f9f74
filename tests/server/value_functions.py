"""Test-only functions that hand the log values it cannot take as they are.

Loaded into a real server with `STEPLOG_FUNCTIONS=tests.server.value_functions`
(beside the built-in `ticker`). The values are built here, in the server's
process, since no HTTP request can carry a NaN, a set or a lone surrogate into
a function's events.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from functions.context import Context, SyncContext
from functions.registry import function
from storage import EventType, InvalidEvent

NAN, INF = math.nan, math.inf


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


@dataclass
class Point:
    """A custom object: written as its `str`."""

    x: float
    y: float


class Shouty:
    def __str__(self) -> str:
        return "SHOUTY nan Infinity"


ODD_VALUES: dict[str, Any] = {
    "nan": NAN,
    "infinities": [INF, -INF, -0.0, 1e308],
    "nested": {"deep": [{"deeper": (NAN, {"x": INF})}], NAN: "nan key", INF: 1},
    "huge int": 2**200,
    "bytes": b"\x00\xff raw",
    "datetime": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    "set": {1, 2},
    "decimal nan": Decimal("NaN"),
    "point": Point(NAN, INF),
    "shouty": Shouty(),
    "odd keys": {(1, 2): "tuple key", None: "none key", 1.5: "float key"},
}

REFUSED_VALUES: dict[str, Any] = {
    "surrogate": "\ud800",
    "surrogate key": {"\udfff": 1},
    "too long an int": 10**5000,
}


class ValuesParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = ""
    """Not used: a text param for a request to put a lone surrogate in."""


@function("odd_values", params=ValuesParams, max_attempts=1)
async def odd_values(ctx: Context, params: ValuesParams) -> dict[str, Any]:
    """Log every odd value, try every refused one, and end with NaN in the result."""
    for name, value in ODD_VALUES.items():
        await ctx.log(name, data={"value": value})
    refused: dict[str, str] = {}
    for name, value in REFUSED_VALUES.items():
        try:
            await ctx.log(name, data={"value": value})
        except InvalidEvent as exc:
            refused[name] = str(exc)
    try:
        await ctx.progress(NAN, "nan progress")
    except ValueError as exc:
        refused["nan pct"] = str(exc)
    try:
        await ctx.emit(EventType.STEP_PROGRESS, pct=INF)
    except InvalidEvent as exc:
        refused["inf pct"] = str(exc)
    return {"score": NAN, "bounds": [-INF, INF], "refused": refused}


@function("odd_values_sync", params=ValuesParams, max_attempts=1)
def odd_values_sync(ctx: SyncContext, params: ValuesParams) -> dict[str, Any]:
    """The same from a worker thread: a refusal reaches the thread that caused it."""
    with ctx.step("values", "odd values from a thread"):
        for name, value in ODD_VALUES.items():
            ctx.log(name, {"value": value})
        try:
            ctx.log("surrogate \ud800")
        except InvalidEvent as exc:
            refused = str(exc)
    return {"score": NAN, "refused": refused}
