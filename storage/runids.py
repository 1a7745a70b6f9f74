"""Run ids: time-ordered, unguessable, and safe in URLs and SSE `id:` lines."""

from __future__ import annotations

import re
import secrets

RUN_ID_PATTERN = re.compile(r"^[0-9a-f]{28}$")


def new_run_id(now: float) -> str:
    """12 hex digits of milliseconds then 16 random ones: sorts by creation time."""
    return f"{int(now * 1000):012x}{secrets.token_hex(8)}"


def is_run_id(text: str) -> bool:
    return RUN_ID_PATTERN.fullmatch(text) is not None
