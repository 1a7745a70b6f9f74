"""Resume points: `Last-Event-ID`, else `?last_event_id=`, else the start."""

from __future__ import annotations

from quart import Request

from stream.http.params import parse_int

MAX_CURSOR = 10**18 - 1
"""The largest id a cursor may name: 18 digits, within a signed 64-bit column."""


def resume_cursor(request: Request) -> int:
    """The id after which to resume; a malformed one is a 400, never a silent hang.

    An empty value means no cursor (EventSource sends none before its first event);
    anything else must be a plain non-negative integer, with no spaces or sign.
    """
    raw = request.headers.get("Last-Event-ID")
    source = "the Last-Event-ID header"
    if not raw:
        raw = request.args.get("last_event_id")
        source = "the last_event_id parameter"
    if not raw:
        return 0
    return parse_int(raw, 0, MAX_CURSOR, what=source, title="Malformed cursor")
