"""Schema versions for SQLite: numbered `NNN_name.sql` files applied in order.

`PRAGMA user_version` records the last one applied, so opening an old file
upgrades it in place and opening a file from a newer steplog is refused.
"""

from __future__ import annotations

import re
import sqlite3
from importlib import resources

from storage.errors import SteplogError

_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def available() -> list[tuple[int, str]]:
    """All migrations shipped with this version, as (number, sql) in order."""
    found = []
    for entry in resources.files(__package__).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date (on the writer's connection); returns the resulting version.

    The version is read inside the `BEGIN IMMEDIATE` that applies the migrations, so
    processes opening a new file at once (`steplog serve --processes N`, a `steplog
    worker` started beside it) take turns: the first migrates, the others find the
    schema done. (`executescript` would commit first, so statements go one by one.)
    """
    steps = available()
    latest = steps[-1][0] if steps else 0
    (current,) = conn.execute("PRAGMA user_version").fetchone()
    if current == latest:
        return current  # the common case: no write lock taken
    conn.execute("BEGIN IMMEDIATE")
    try:
        (current,) = conn.execute("PRAGMA user_version").fetchone()
        if current > latest:
            raise SteplogError(
                f"database schema version {current} is newer than this steplog ({latest}); upgrade"
            )
        for number, sql in steps:
            if number <= current:
                continue
            for statement in statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            current = number
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return current


def statements(script: str) -> list[str]:
    """The statements of `script`, split where SQLite's own tokenizer says one ends
    (so a trigger's `BEGIN … END;` and a `;` in a comment or string stay whole)."""
    found: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                found.append(pending)
            pending = ""
    return found
