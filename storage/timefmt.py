"""Timestamps as steplog writes them: ISO-8601 UTC with microseconds and a `Z`."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(ts: float) -> str:
    """Format a Unix timestamp, e.g. `2026-11-25T22:03:49.123456Z`."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def parse_iso(text: str) -> float:
    """Parse what `iso` wrote (or any ISO-8601 time with an offset) to a Unix timestamp."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
