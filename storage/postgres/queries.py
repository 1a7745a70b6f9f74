"""The named queries of `queries.sql`, loaded once (procrastinate's format).

Keeping every statement in one annotated file means the SQL can be read,
reviewed and run in `psql` as it is, and the Python modules only name it.
"""

from __future__ import annotations

import re
from importlib import resources

_HEADER = re.compile(r"(?:\n|^)-- ([a-z0-9_]+) --\n(?:-- .*\n)*", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """Split a query file into {name: sql}; the text before the first header is ignored."""
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, sql in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = sql.strip()
    return queries


QUERIES: dict[str, str] = parse(
    resources.files(__package__).joinpath("queries.sql").read_text(encoding="utf-8")
)
