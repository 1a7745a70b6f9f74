"""Named SQL statements kept in a `queries.sql` file per backend (procrastinate's format).

Keeping every statement of a backend in one annotated file means the SQL can be
read, reviewed and run in `psql` or `sqlite3` as it is, and the Python modules
only name it. The loader is backend-neutral: it only splits text under names,
so PostgreSQL's `$1` and SQLite's `?` parameters pass through untouched. The
file is read on first use, not at import, so a backend module can name its
queries at import time without importing its own package first.

File format::

    -- query_name --
    -- what it is for (any number of comment lines)
    SQL
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
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


class Queries(Mapping[str, str]):
    """The statements of one package's `queries.sql`, read once, when first named."""

    def __init__(self, package: str) -> None:
        self.package = package
        self._queries: dict[str, str] | None = None

    def _loaded(self) -> dict[str, str]:
        if self._queries is None:
            text = resources.files(self.package).joinpath("queries.sql").read_text("utf-8")
            self._queries = parse(text)
        return self._queries

    def __getitem__(self, name: str) -> str:
        return self._loaded()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())

    def __repr__(self) -> str:
        return f"Queries({self.package!r})"


SQLITE = Queries("storage.sqlite")
"""storage/sqlite/queries.sql: `?` parameters."""
POSTGRES = Queries("storage.postgres")
"""storage/postgres/queries.sql: `$1, $2, …` parameters."""
