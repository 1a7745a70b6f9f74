"""Run ids: time-ordered, unguessable, and safe in URLs and SSE `id:` lines."""

from __future__ import annotations

import itertools
import re
import secrets

RUN_ID_PATTERN = re.compile(r"^[0-9a-f]{28}$")


_counter = itertools.count()


def new_run_id(now: float) -> str:
    """12 hex digits of milliseconds, a 4-digit per-process counter, 12 random digits.

    Sorts by creation time; the counter keeps runs created in the same
    millisecond (one group commit) in creation order too.
    """
    return f"{int(now * 1000):012x}{next(_counter) % 0x10000:04x}{secrets.token_hex(6)}"


def is_run_id(text: str) -> bool:
    return RUN_ID_PATTERN.fullmatch(text) is not None
