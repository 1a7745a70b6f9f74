"""The one JSON encoding steplog uses everywhere (the seed's crucial fix).

`ensure_ascii=False` keeps non-ASCII text as real UTF-8 instead of `\\u` escapes,
which some non-browser clients and log pipelines mangle; `default=str` turns
datetimes, UUIDs, paths and other objects into strings instead of crashing the
stream with `TypeError`. Compact separators keep frames small.

Every event is encoded on the append path, so `dumps` calls CPython's C encoder
directly, built once: `json.JSONEncoder.encode` would rebuild it on every call,
which costs more than encoding a small event does. The text is the same.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any

Encode = Callable[[Any], str]


def c_encoder(*, default: Callable[[Any], Any], allow_nan: bool) -> Encode | None:
    """CPython's C encoder with steplog's settings (compact, UTF-8 kept), or None.

    It is built without a circular-reference table, so a value that contains
    itself fails with `RecursionError` (turned into `ValueError` by the callers)
    instead of the stdlib's up-front check: the same outcome, without a dict of
    ids kept per call.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - not CPython
        return None
    encode = make(
        None, default, json.encoder.encode_basestring, None, ":", ",", False, False, allow_nan
    )

    def run(value: Any) -> str:
        if isinstance(value, str):
            return json.encoder.encode_basestring(value)
        try:
            return "".join(encode(value, 0))
        except RecursionError:
            raise ValueError("Circular reference detected (or nested too deeply)") from None

    return run


_encoder = json.JSONEncoder(ensure_ascii=False, default=str, separators=(",", ":"))
_canonical = json.JSONEncoder(
    ensure_ascii=False, default=str, separators=(",", ":"), sort_keys=True, allow_nan=False
)

dumps: Encode = c_encoder(default=str, allow_nan=True) or _encoder.encode
"""Encode a value as compact UTF-8 JSON; never fails on datetimes or odd objects."""


def canonical(value: Any) -> str:
    """Encode `value` canonically: sorted keys, no whitespace, no NaN (for hashing)."""
    return _canonical.encode(value)


def loads(text: str | bytes) -> Any:
    """Decode JSON text."""
    return json.loads(text)
