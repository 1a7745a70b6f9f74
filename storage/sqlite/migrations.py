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
    """Bring the schema up to date (on the writer's connection); returns the resulting version."""
    (current,) = conn.execute("PRAGMA user_version").fetchone()
    steps = available()
    latest = steps[-1][0] if steps else 0
    if current > latest:
        raise SteplogError(
            f"database schema version {current} is newer than this steplog ({latest}); upgrade"
        )
    for number, sql in steps:
        if number <= current:
            continue
        # executescript would COMMIT first; wrap each migration in one transaction.
        conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {number};\nCOMMIT;")
        current = number
    return current
