"""The one JSON encoding steplog uses everywhere (the seed's crucial fix).

`ensure_ascii=False` keeps non-ASCII text as real UTF-8 instead of `\\u` escapes,
which some non-browser clients and log pipelines mangle; `default=str` turns
datetimes, UUIDs, paths and other objects into strings instead of crashing the
stream with `TypeError`. Compact separators keep frames small.
"""

from __future__ import annotations

import json
from typing import Any

_encoder = json.JSONEncoder(ensure_ascii=False, default=str, separators=(",", ":"))
_canonical = json.JSONEncoder(
    ensure_ascii=False, default=str, separators=(",", ":"), sort_keys=True, allow_nan=False
)


def dumps(value: Any) -> str:
    """Encode `value` as compact UTF-8 JSON; never fails on datetimes or odd objects."""
    return _encoder.encode(value)


def canonical(value: Any) -> str:
    """Encode `value` canonically: sorted keys, no whitespace, no NaN (for hashing)."""
    return _canonical.encode(value)


def loads(text: str | bytes) -> Any:
    """Decode JSON text."""
    return json.loads(text)
