"""What a `scrape_batch` run accepts: many profile URLs, and how hard to go at them.

`urls` is capped by `STEPLOG_SCRAPE_BATCH_MAX` (default 50, at most 500), read when
the params are validated, so an operator can lower it without a release; each URL
is checked like `scrape`'s (http(s) only, no credentials inside). Logins come from
`STEPLOG_SCRAPE_CREDENTIALS` only: a batch takes no credentials in its params.
"""

from __future__ import annotations

import os
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from functions.scrape.egress.targets import TargetRefused, split_url
from functions.scrape.params import DEFAULT_STEP_TIMEOUT
from functions.scrape.recipe import recipes

BATCH_MAX_ENV = "STEPLOG_SCRAPE_BATCH_MAX"
DEFAULT_BATCH_MAX = 50
HARD_BATCH_MAX = 500
DEFAULT_CONCURRENCY = 3
MAX_CONCURRENCY = 8
DEFAULT_BATCH_TIMEOUT = 1800.0


def batch_max(env: dict[str, str] | None = None) -> int:
    """The most URLs one batch may take (a bad setting falls back to the default)."""
    raw = (os.environ if env is None else env).get(BATCH_MAX_ENV, "").strip()
    try:
        value = int(raw) if raw else DEFAULT_BATCH_MAX
    except ValueError:
        return DEFAULT_BATCH_MAX
    return max(1, min(value, HARD_BATCH_MAX))


class BatchParams(BaseModel):
    """The body of `POST /hooks/scrape_batch` (or `params` of `POST /runs`)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    urls: list[str] = Field(min_length=1, description="the profile pages to scrape, in order")
    concurrency: int = Field(
        DEFAULT_CONCURRENCY, ge=1, le=MAX_CONCURRENCY, description="pages open at once"
    )
    fail_when: Literal["all", "any", "never"] = Field(
        "all", description="when the run fails: all URLs failed (default), any did, or never"
    )
    recipe: str | None = Field(None, description="a recipe name for every URL; default: by URL")
    max_pages: int = Field(20, ge=1, le=100, description="pagination pages (or scrolls) per URL")
    step_timeout_s: float = Field(DEFAULT_STEP_TIMEOUT, gt=0, le=600)
    run_timeout_s: float = Field(DEFAULT_BATCH_TIMEOUT, gt=0, le=4 * 3600)
    as_of: date | None = Field(None, description="the day 'present' means (default: today)")

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, value: list[str]) -> list[str]:
        limit = batch_max()
        if len(value) > limit:
            raise ValueError(f"at most {limit} URLs per batch ({BATCH_MAX_ENV}), not {len(value)}")
        cleaned: list[str] = []
        for index, url in enumerate(value, 1):
            url = url.strip()
            if not url or len(url) > 2048:
                raise ValueError(f"URL {index} must be 1 to 2048 characters")
            if any(ord(c) < 0x20 or c.isspace() for c in url):
                raise ValueError(f"URL {index} contains whitespace or control characters")
            try:
                split_url(url)
            except TargetRefused as exc:
                raise ValueError(f"URL {index}: {exc.reason}") from None
            cleaned.append(url)
        return cleaned

    @field_validator("recipe")
    @classmethod
    def _known_recipe(cls, value: str | None) -> str | None:
        if value is not None and value not in recipes():
            raise ValueError(f"unknown recipe; known: {', '.join(sorted(recipes()))}")
        return value
