"""JSON read as strictly as a browser's `JSON.parse` reads it, for tests."""

from __future__ import annotations

import json
from typing import Any


def _refuse(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON (JSON.parse refuses it)")


def strict_loads(text: str | bytes) -> Any:
    """`json.loads`, refusing the NaN, Infinity and -Infinity that Python alone accepts."""
    return json.loads(text, parse_constant=_refuse)
