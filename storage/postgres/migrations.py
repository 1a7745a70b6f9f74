"""Schema versions for PostgreSQL: numbered `NNN_name.sql` files applied in order.

The `schema_version` table records every migration applied. All of them run in
one transaction under an advisory lock, so several `steplog serve` processes
starting together against a new database apply each migration exactly once,
and a failed migration leaves the schema as it was (PostgreSQL DDL is
transactional).
"""

from __future__ import annotations

import re
from importlib import resources

import asyncpg

from storage.errors import SteplogError
from storage.postgres.errors import translate
from storage.sqlfiles import POSTGRES as QUERIES

_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


def available() -> list[tuple[int, str, str]]:
    """All migrations shipped with this version, as (number, name, sql) in order."""
    found = []
    for entry in resources.files(__package__).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found)


def latest() -> int:
    steps = available()
    return steps[-1][0] if steps else 0


async def current(conn: asyncpg.Connection) -> int | None:
    """The schema version in the database, or None when steplog's tables are missing."""
    if not await conn.fetchval(QUERIES["has_schema_version"]):
        return None
    version: int = await conn.fetchval(QUERIES["schema_version"])
    return version


async def migrate(conn: asyncpg.Connection) -> int:
    """Bring the schema up to date; returns the resulting version."""
    if await current(conn) == latest():
        return latest()  # the common case takes no lock and writes nothing
    async with conn.transaction():
        await conn.execute(QUERIES["migration_lock"])
        await conn.execute(QUERIES["create_schema_version"])
        version: int = await conn.fetchval(QUERIES["schema_version"])
        newest = latest()
        if version > newest:
            raise SteplogError(
                f"database schema version {version} is newer than this steplog ({newest});"
                " upgrade steplog"
            )
        for number, name, sql in available():
            if number <= version:
                continue
            await conn.execute(sql)
            await conn.execute(QUERIES["record_migration"], number, name)
            version = number
    return version


async def grant_app_role(conn: asyncpg.Connection, role: str) -> None:
    """Let `role` run steplog, with no UPDATE, DELETE or TRUNCATE on `events`."""
    schema = await conn.fetchval(QUERIES["current_schema_name"])
    if schema is None:
        raise SteplogError("no schema selected: set search_path to steplog's schema")
    sql = QUERIES["grant_app_role"].format(schema=_quote_ident(schema), role=_quote_ident(role))
    await conn.execute(sql)


def _quote_ident(name: str) -> str:
    # Identifiers cannot be query parameters; quoting makes any name inert.
    return '"' + name.replace('"', '""') + '"'


async def migrate_database(url: str, app_role: str | None = None) -> tuple[int | None, int]:
    """`steplog migrate`: bring the schema at `url` up to date; returns (before, after)."""
    try:
        conn = await asyncpg.connect(url)
        try:
            before = await current(conn)
            after = await migrate(conn)
            if app_role:
                await grant_app_role(conn, app_role)
        finally:
            await conn.close()
    except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
        raise translate(exc) from exc
    return before, after
