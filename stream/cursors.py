"""Resume points: `Last-Event-ID`, else `?last_event_id=`, else the start."""

from __future__ import annotations

import re

from quart import Request

from stream.problems import HTTPProblem

_DIGITS = re.compile(r"^[0-9]{1,18}$")


def resume_cursor(request: Request) -> int:
    """The id after which to resume; a malformed one is a 400, never a silent hang."""
    raw = request.headers.get("Last-Event-ID")
    source = "Last-Event-ID header"
    if raw is None or raw.strip() == "":
        raw = request.args.get("last_event_id")
        source = "last_event_id parameter"
    if raw is None or raw.strip() == "":
        return 0
    raw = raw.strip()
    if not _DIGITS.match(raw):
        raise HTTPProblem(
            400,
            "Malformed cursor",
            f"the {source} must be a non-negative integer event id, not {raw[:40]!r}",
        )
    return int(raw)
