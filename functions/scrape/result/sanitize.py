"""Clean scraped text: one Unicode form, nothing invisible, and an ASCII twin for names.

Scraped text is attacker-controlled. A name can carry a right-to-left override
(U+202E) that makes it display as something else, zero-width characters that
make two equal-looking names differ, control characters that corrupt terminals
and logs. The cleaned text is still real UTF-8 (accents, other scripts, emoji
stay as they are); systems that only take ASCII get `*_ascii` fields beside
the name-like fields, transliterated with `unidecode`.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from unidecode import unidecode

ZWJ = "\u200d"
ZWNJ = "\u200c"
INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
"""Letters that render as nothing (Hangul fillers, the blank Braille pattern)."""
MAX_COMBINING = 4
"""Longer runs of combining marks on one letter are "Zalgo" noise, not writing."""

NAME_LIKE = ("name", "location", "company", "school")
"""Fields that get an ASCII transliteration beside them (`name` → `name_ascii`)."""
MULTILINE = frozenset({"about", "description"})
"""Fields whose line breaks are kept; every other text is folded onto one line."""

_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def _is_emoji(char: str) -> bool:
    code = ord(char)
    return (
        0x1F000 <= code <= 0x1FAFF
        or 0x2600 <= code <= 0x27BF
        or code in (0x2640, 0x2642, 0x2695, 0x2696, 0x2708, 0x2764, 0xFE0F)
    )


def _joins_script(char: str) -> bool:
    """Scripts where ZWNJ changes how a word is written (Persian, Arabic, Indic)."""
    code = ord(char)
    return 0x0600 <= code <= 0x08FF or 0x0900 <= code <= 0x0DFF or 0xFB50 <= code <= 0xFEFF


def _keep_joiner(char: str, before: str, after: str) -> bool:
    if not before or not after:
        return False
    if char == ZWJ:
        return _is_emoji(before) and _is_emoji(after)
    return _joins_script(before) and _joins_script(after)


def clean_text(text: str, *, multiline: bool = False) -> str:
    """NFC, invisible and control characters removed, whitespace normalised."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    kept: list[str] = []
    combining = 0
    for index, char in enumerate(text):
        category = unicodedata.category(char)
        if char in "\n\t" or category in ("Zs", "Zl", "Zp"):
            kept.append("\n" if char == "\n" or category in ("Zl", "Zp") else " ")
            combining = 0
            continue
        if category in ("Cc", "Cs", "Co") or char in INVISIBLE_LETTERS:
            continue
        if category == "Cf":
            before = kept[-1] if kept else ""
            after = text[index + 1] if index + 1 < len(text) else ""
            if char in (ZWJ, ZWNJ) and _keep_joiner(char, before, after):
                kept.append(char)
            continue
        if category in ("Mn", "Me"):
            combining += 1
            if combining > MAX_COMBINING:
                continue
        else:
            combining = 0
        kept.append(char)
    cleaned = unicodedata.normalize("NFC", "".join(kept))
    if not multiline:
        return " ".join(cleaned.split())
    lines = [_SPACES.sub(" ", line).strip() for line in cleaned.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def to_ascii(text: str) -> str:
    """An ASCII transliteration (`Zoë` → `Zoe`, `李伟` → `Li Wei`); emoji are dropped."""
    return " ".join(unidecode(text).split())


def sanitize(value: Any, key: str | None = None) -> Any:
    """Clean every string in a JSON-like value; add `*_ascii` beside name-like fields."""
    if isinstance(value, str):
        return clean_text(value, multiline=key in MULTILINE)
    if isinstance(value, list):
        return [sanitize(item, key) for item in value]
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for name, item in value.items():
            clean_name = clean_text(str(name))
            result[clean_name] = sanitize(item, clean_name)
            if clean_name in NAME_LIKE and (isinstance(item, str) or item is None):
                text = result[clean_name]
                result[f"{clean_name}_ascii"] = None if text is None else to_ascii(text)
        return result
    return value
