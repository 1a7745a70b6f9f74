"""Integers a client sends in the query string or a header: ASCII digits, within bounds.

One parser for every integer the API reads (`limit`, `after`, `last_event_id`,
`Last-Event-ID`), so they all refuse the same things with the same 400. Python's
own checks are too lenient for this: `str.isdigit()` is true for `²` and `①`,
which `int()` then rejects (a 500), and both accept Arabic-Indic and fullwidth
digits (U+0661 U+0660 is ten), signs, spaces and `_` separators. Here a value is
ASCII digits and nothing else, no longer than the upper bound, checked before
`int()` runs (which would otherwise work through any length it is given).
"""

from __future__ import annotations

import re

from quart import request

from stream.http.problems import HTTPProblem

_DIGITS = re.compile("[0-9]+")
"""Used with `fullmatch`: `[0-9]`, not `\\d`, which matches every Unicode digit."""


def parse_int(raw: str, low: int, high: int, *, what: str, title: str) -> int:
    """`raw` as an integer from `low` to `high` (`0 <= low`), else a 400 naming `what`."""
    if (
        len(raw) > len(str(high))
        or _DIGITS.fullmatch(raw) is None
        or not low <= (value := int(raw)) <= high
    ):
        raise HTTPProblem(
            400,
            title,
            f"{what} must be an integer from {low} to {high} in ASCII digits, not {raw[:40]!r}",
        )
    return value


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """The query parameter `name` as an integer in bounds; `default` when it is absent."""
    raw = request.args.get(name)
    if raw is None:
        return default
    return parse_int(raw, low, high, what=name, title=f"Bad {name}")
