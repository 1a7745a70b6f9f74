"""The one JSON encoding steplog uses everywhere.

`ensure_ascii=False` keeps non-ASCII text as real UTF-8 instead of `\\u` escapes,
which some non-browser clients and log pipelines mangle; `default=str` turns
datetimes, UUIDs, paths and other objects into strings instead of crashing the
stream with `TypeError`. Compact separators keep frames small.

What JSON has no form for is written the way JavaScript's `JSON.stringify`
writes it, so every browser's `JSON.parse` reads what steplog sends: NaN and
±Infinity become `null` (Python's own `NaN`/`Infinity` tokens are not JSON),
and a dict key that is not a string, number, bool or None becomes `str(key)`
(a NaN key becomes "NaN", as in JavaScript).

Every event is encoded on the append path, so `dumps` calls CPython's C encoder
directly, built once: `json.JSONEncoder.encode` would rebuild it on every call,
which costs more than encoding a small event does. The text is the same. It
refuses NaN (`allow_nan=False`), so a value without one costs nothing more;
only a value the C encoder refuses is walked in Python (`jsonable`) and
encoded again.
"""

from __future__ import annotations

import json
import json.encoder
import math
from collections.abc import Callable
from typing import Any

Encode = Callable[[Any], str]

_CIRCULAR = "Circular reference detected (or nested too deeply)"


def c_encoder(
    *,
    default: Callable[[Any], Any],
    allow_nan: bool,
    fallback: Callable[[Any], Any] | None = None,
) -> Encode | None:
    """CPython's C encoder with steplog's settings (compact, UTF-8 kept), or None.

    It is built without a circular-reference table, so a value that contains
    itself fails with `RecursionError` (turned into `ValueError` by the callers)
    instead of the stdlib's up-front check: the same outcome, without a dict of
    ids kept per call.

    With `fallback`, a value the encoder refuses with `ValueError` or `TypeError`
    (NaN, an odd dict key) is encoded once more as `fallback(value)`; whatever
    that cannot mend (an int too long to print) fails again, as it should.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - not CPython
        return None
    quote = json.encoder.encode_basestring
    encode = make(None, default, quote, None, ":", ",", False, False, allow_nan)

    def run(value: Any) -> str:
        if isinstance(value, str):
            return quote(value)
        try:
            return "".join(encode(value, 0))
        except RecursionError:
            raise ValueError(_CIRCULAR) from None
        except (ValueError, TypeError):
            if fallback is None:
                raise
        try:
            return "".join(encode(fallback(value), 0))
        except RecursionError:
            raise ValueError(_CIRCULAR) from None

    return run


_KEY_TYPES = (str, int, float, type(None))
"""Dict keys JSON encoders take as they are (bool is an int)."""


def jsonable(value: Any) -> Any:
    """`value` with what JSON has no form for replaced as `JSON.stringify` replaces it.

    NaN and ±Infinity become None (`null`), in lists, tuples and dict values at
    any depth; a non-finite float key becomes "NaN", "Infinity" or "-Infinity"
    and any other key JSON cannot take becomes `str(key)`. Everything else is
    left to the encoder (and its `default=str`). Only called for a value the C
    encoder refused, so its cost is never paid on the append path's common case.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_key(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value


def _key(key: Any) -> Any:
    if isinstance(key, float) and not math.isfinite(key):
        return "NaN" if key != key else ("Infinity" if key > 0 else "-Infinity")
    return key if isinstance(key, _KEY_TYPES) else str(key)


_encoder = json.JSONEncoder(ensure_ascii=False, default=str, separators=(",", ":"), allow_nan=False)
_canonical = json.JSONEncoder(
    ensure_ascii=False, default=str, separators=(",", ":"), sort_keys=True, allow_nan=False
)


def _python_dumps(value: Any) -> str:  # pragma: no cover - not CPython
    try:
        return _encoder.encode(value)
    except (ValueError, TypeError):
        return _encoder.encode(jsonable(value))


dumps: Encode = c_encoder(default=str, allow_nan=False, fallback=jsonable) or _python_dumps
"""Encode a value as compact UTF-8 JSON that any strict parser reads (no NaN, no
Infinity); never fails on datetimes or odd objects. It can still fail (`ValueError`)
on a value that contains itself or an int too long to print."""


def canonical(value: Any) -> str:
    """Encode `value` canonically: sorted keys, no whitespace, no NaN (for hashing)."""
    return _canonical.encode(value)


def loads(text: str | bytes) -> Any:
    """Decode JSON text."""
    return json.loads(text)
