"""How deeply a JSON text nests, measured without parsing it (and without recursing).

Python's `json` parser recurses once per nested array or object, and so do the
walks over parsed JSON-LD (and the log's encoder when a capture is recorded): a
page with a few thousand `[` in a `<script type="application/ld+json">` used to
fail the scrape with `RecursionError`. Structured data never needs more than a
handful of levels, so a block deeper than `MAX_JSONLD_DEPTH` is treated as absent
before it is parsed.

The scan mirrors the API's request-body check (stream/http/json_depth.py; kept
apart so that `functions` does not import the HTTP layer): take the escapes out of
strings, split on `"` so that every other piece lies outside a string, and follow
the depth over the brackets left there. It never recurses and never validates: on
any valid prefix it delimits strings exactly as the parser does, so text it passes
can never make the parser nest past the limit.
"""

from __future__ import annotations

from itertools import accumulate

MAX_JSONLD_DEPTH = 32
"""The deepest nesting of arrays and objects a JSON-LD block may have (the top level is 1)."""

_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def too_deep(text: str, limit: int = MAX_JSONLD_DEPTH) -> bool:
    """Whether parsing `text` would nest arrays and objects deeper than `limit`."""
    if text.count("[") + text.count("{") <= limit:
        return False
    # `\\` first, then `\"`: a run of backslashes pairs up from its start, as in JSON.
    plain = text.replace("\\\\", "").replace('\\"', "")
    outside = "".join(plain.split('"')[0::2])
    steps = [_STEP[c] for c in outside if c in _STEP]
    return bool(steps) and max(accumulate(steps)) > limit
