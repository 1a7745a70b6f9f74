"""How deeply a JSON request body nests, measured without parsing it.

Python's `json` parser recurses once per nested array or object: a body of a
thousand `[` raises `RecursionError` (which was a 500), and a deeper one under a
raised recursion limit could exhaust the C stack. No request to this API needs
more than a few levels, so a body is checked against `MAX_JSON_DEPTH` before it
is parsed, by a scan that does not recurse and runs at C speed: two `replace`
calls take the escapes out of strings, after which every `"` left opens or
closes a string; splitting on `"` then leaves the text outside strings, whose
brackets give the running depth (`accumulate`), chunk by chunk, stopping at the
first chunk that passes the limit. Beyond two copies of the body, memory stays
bounded by the chunk.

The scan does not validate. On any prefix of the body that is valid JSON it
delimits strings exactly as the parser does, so the depth it finds is at least
the depth the parser would reach before it stops at the first error; a body the
scan passes can therefore never make the parser recurse past the limit.
"""

from __future__ import annotations

from itertools import accumulate

MAX_JSON_DEPTH = 64
"""The deepest nesting of arrays and objects a request body may have (the top level is 1)."""

_CHUNK = 65536
"""Bytes scanned per step: bounds the scan's memory, and a body too deep at its start is
refused after one chunk."""

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")

_STEP = [0] * 256
"""What each byte does to the depth: +1 for `[` and `{`, -1 for `]` and `}`."""
for _byte in b"[{":
    _STEP[_byte] = 1
for _byte in b"]}":
    _STEP[_byte] = -1


def too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether parsing `body` would nest arrays and objects deeper than `limit`.

    Brackets inside strings do not count. The usual small body is answered by two
    counts alone.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    # `\\` first, then `\"`: a run of backslashes pairs up from its start, as in JSON.
    text = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    depth, in_string = 0, 0
    for start in range(0, len(text), _CHUNK):
        pieces = text[start : start + _CHUNK].split(b'"')
        outside = b"".join(pieces[in_string::2])  # pieces alternate outside/inside strings
        in_string ^= (len(pieces) - 1) & 1
        brackets = outside.translate(None, _NOT_BRACKETS)
        if brackets:
            levels = list(accumulate(map(_STEP.__getitem__, brackets), initial=depth))
            if max(levels) > limit:
                return True
            depth = levels[-1]
    return False
