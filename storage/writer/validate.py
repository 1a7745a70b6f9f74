"""What the log accepts, checked on the caller's side before a write joins a group commit.

A group commit writes many callers' operations in one transaction, so a value
that the database, the hash chain or a strict JSON parser cannot take (text
that is not valid Unicode, a NaN progress, data no JSON encoder can write) is
refused here, when the request is built: it fails only its own caller, with an
`InvalidEvent` naming the field and the problem. That error's own text quotes
no part of a bad value that could not be printed, so it can always be logged,
stored in a `run.failed` event and sent. (Whatever fails inside a transaction
all the same fails alone too: see `Pending.refuse` and the backends' writers.)

Text a worker hands over rather than a function (an exception's message that
ends an attempt, a cancel reason) is never refused, since that would lose the
retry or the cancel: `storable` replaces what no backend can store with U+FFFD.

These checks run for every append, so each is a type test and a C-level scan
(`str.isascii`) in the common case; the slower paths only run for bad values.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

from storage.errors import InvalidEvent
from storage.jsonenc import dumps
from storage.model import EVENT_TYPES, EventType, NewEvent

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""NUL (PostgreSQL text cannot hold it) and lone surrogates (UTF-8 cannot encode them)."""

RESERVED_TYPES: frozenset[str] = frozenset({EventType.ARCHIVE_SEGMENT})
"""Event types no caller may append: the archiver writes `archive.segment` inside its own
transaction (storage/sqlite/archive.py, storage/postgres/archive.py), never through an
append, so the audit can trust that every such event records a real segment."""

MAX_DEPTH = 200
"""How deep `_find_surrogate` looks for the text at fault before giving up on naming it."""


def storable(text: str) -> str:
    """`text` with NUL and lone surrogates replaced by U+FFFD: storable by every backend."""
    if text.isascii() and "\x00" not in text:
        return text
    return _UNSTORABLE.sub("\ufffd", text)


def event_data(new: NewEvent) -> str:
    """Check every field of an event a caller asks to append; its data as JSON text.

    The text returned is what is stored, hashed and sent (see storage/jsonenc.py
    for how NaN and other values JSON has no form for are written).
    """
    if type(new.run_id) is not str:
        raise InvalidEvent(f"run_id must be text, not {type(new.run_id).__name__}")
    kind = new.type
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise InvalidEvent(f"type {_show(kind)} is not an event type")
    if kind in RESERVED_TYPES:
        raise InvalidEvent(
            f"type {kind!r} is reserved: only the archiver writes it (a run cannot claim to"
            " have moved the log into a segment)"
        )
    if type(new.attempt) is not int:
        raise InvalidEvent(f"attempt must be an int, not {type(new.attempt).__name__}")
    if new.step is not None:
        text("step", new.step)
    if new.message is not None:
        text("message", new.message)
    if new.pct is not None:
        pct(new.pct)
    return json_text("data", new.data)


def text(field: str, value: Any) -> str:
    """`value`, refused unless it is a str UTF-8 can encode (no lone surrogate)."""
    if not isinstance(value, str):
        raise InvalidEvent(f"{field} must be text, not {type(value).__name__}")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            raise InvalidEvent(_surrogate(field, exc)) from None
    return value


def pct(value: Any) -> float:
    """A progress percentage: a finite real number (the hash covers it to two decimals)."""
    exact = type(value) is float or type(value) is int  # the common case, without the ABC
    if not exact and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise InvalidEvent(f"pct must be a number, not {type(value).__name__}")
    try:
        number = float(value)
    except (OverflowError, ValueError, TypeError):
        number = math.inf
    if not math.isfinite(number):
        raise InvalidEvent(f"pct must be a finite number, not {_show(value)}")
    return number


def json_text(field: str, value: Any) -> str:
    """`value` encoded as JSON text that UTF-8 can encode; refused when it cannot be."""
    try:
        encoded = dumps(value)
    except Exception as exc:  # contains itself, an int too long to print, a failing str()
        raise InvalidEvent(f"{field} cannot be encoded as JSON: {_reason(exc)}") from None
    if not encoded.isascii():
        try:
            encoded.encode()
        except UnicodeEncodeError as exc:
            where = _find_surrogate(value, field, 0) or (field, exc)
            raise InvalidEvent(_surrogate(*where)) from None
    return encoded


def _surrogate(where: str, exc: UnicodeEncodeError) -> str:
    point = ord(exc.object[exc.start])
    return (
        f"{where} contains a lone surrogate (U+{point:04X}) at index {exc.start}, which"
        " UTF-8 cannot encode: text must be valid Unicode"
    )


def _encode_error(value: str) -> UnicodeEncodeError | None:
    if value.isascii():
        return None
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        return exc
    return None


def _find_surrogate(value: Any, path: str, depth: int) -> tuple[str, UnicodeEncodeError] | None:
    """Where in `value` the unencodable text is (`data["list"][1]`), walking it the way
    the encoder does; None when it cannot be told (too deep, or a changing `str`)."""
    if isinstance(value, str):
        exc = _encode_error(value)
        return None if exc is None else (path, exc)
    if depth > MAX_DEPTH or isinstance(value, int | float) or value is None:
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and (exc := _encode_error(key)) is not None:
                return f"{path} key {_show(key)}", exc
            if (found := _find_surrogate(item, f"{path}[{_show(key)}]", depth + 1)) is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if (found := _find_surrogate(item, f"{path}[{index}]", depth + 1)) is not None:
                return found
        return None
    try:
        as_text = str(value)  # what `default=str` wrote
    except Exception:
        return None
    exc = _encode_error(as_text)
    return None if exc is None else (f"{path} (a {type(value).__name__} written as text)", exc)


def _show(value: Any, limit: int = 40) -> str:
    """A short, always printable rendering of a (possibly bad) value for an error message."""
    try:
        shown = repr(value)  # str's repr escapes lone surrogates and other unprintables
    except Exception:
        shown = f"<{type(value).__name__}>"
    shown = storable(shown)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _reason(exc: BaseException) -> str:
    try:
        detail = str(exc)
    except Exception:
        detail = ""
    detail = storable(detail)[:200]
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
