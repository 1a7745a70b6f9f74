"""Test-only function for the stream view: returns the profile it is given as its result.

Loaded with `STEPLOG_FUNCTIONS=tests.e2e.view_functions`; it lets a test put
hostile text (a bio with `<script>`) into a run's result card.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from functions.context import Context
from functions.registry import function


class ProfileParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: dict[str, Any]


@function("profile_echo", params=ProfileParams, max_attempts=1, steps=("extract",))
async def profile_echo(ctx: Context, params: ProfileParams) -> dict[str, Any]:
    """Report one step, then return the given profile as the scraped result."""
    async with ctx.step("extract", "Extracting profile data"):
        await ctx.log(f"bio: {params.profile.get('about', '')}")
    return {"profile": params.profile}
