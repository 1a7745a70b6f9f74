"""Month-precision dates as profiles write them: `2019-03`, `Mar 2019`, `2019`, `Present`.

Experience dates are the input of the seniority estimate, so they are parsed
once, into `YYYY-MM` strings, where the profile is extracted.
"""

from __future__ import annotations

import re
from datetime import date

MONTHS = {
    name: number
    for number, names in enumerate(
        [
            ("jan", "january", "janv", "janvier", "ene", "enero"),
            ("feb", "february", "fév", "fev", "février", "feb.", "febrero"),
            ("mar", "march", "mars", "marzo"),
            ("apr", "april", "avr", "avril", "abr", "abril"),
            ("may", "mai", "mayo"),
            ("jun", "june", "juin", "junio"),
            ("jul", "july", "juil", "juillet", "julio"),
            ("aug", "august", "août", "aout", "ago", "agosto"),
            ("sep", "sept", "september", "septembre", "septiembre"),
            ("oct", "october", "octobre", "octubre"),
            ("nov", "november", "novembre", "noviembre"),
            ("dec", "december", "déc", "décembre", "dic", "diciembre"),
        ],
        start=1,
    )
    for name in names
}
PRESENT = frozenset({"present", "now", "current", "today", "aujourd'hui", "actualidad", "heute"})

_ISO = re.compile(r"^\s*(\d{4})(?:-(\d{1,2}))?(?:-\d{1,2})?\s*$")
_MONTH_YEAR = re.compile(r"^\s*([^\W\d_]+)\.?\s+(\d{4})\s*$")
_RANGE = re.compile(r"\s+(?:-|\u2013|\u2014|to|until|bis)\s+", re.IGNORECASE)


def parse_month(text: str | None) -> str | None:
    """`YYYY-MM` for a date a profile shows, None for "present", blank or unreadable."""
    if not text:
        return None
    text = text.strip()
    if text.lower() in PRESENT:
        return None
    if match := _ISO.match(text):
        year, month = int(match[1]), int(match[2] or 1)
        return f"{year:04d}-{month:02d}" if 1 <= month <= 12 else None
    if match := _MONTH_YEAR.match(text):
        named = MONTHS.get(match[1].lower())
        return f"{int(match[2]):04d}-{named:02d}" if named else None
    return None


def parse_range(text: str | None) -> tuple[str | None, str | None]:
    """`Mar 2019 - Present` (any dash, or "to") → (`2019-03`, None)."""
    if not text:
        return None, None
    parts = _RANGE.split(text.strip(), maxsplit=1)
    start = parse_month(parts[0])
    end = parse_month(parts[1]) if len(parts) > 1 else None
    return start, end


def month_index(value: str) -> int:
    """Months since year 0, for interval arithmetic."""
    year, month = value.split("-")
    return int(year) * 12 + int(month) - 1


def as_month(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"
