"""Throwaway schemas for tests: each test gets its own, so tests never see each other.

Test support, not runtime code (the installed package carries no test code); set
`STEPLOG_TEST_POSTGRES` to point the tests and benchmarks at another server.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

DEFAULT_TEST_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_url_for_tests() -> str:
    """The server the tests use: `STEPLOG_TEST_POSTGRES`, else the local one."""
    return os.environ.get("STEPLOG_TEST_POSTGRES") or DEFAULT_TEST_URL


def with_search_path(url: str, schema: str) -> str:
    """`url` with `search_path=schema` (asyncpg sends unknown URL parameters as settings)."""
    parts = urlsplit(url)
    query = f"{parts.query}&search_path={schema}" if parts.query else f"search_path={schema}"
    return urlunsplit(parts._replace(query=query))


async def unreachable(url: str) -> str | None:
    """Why the server cannot be used, or None when it can."""
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except Exception as exc:
        return f"cannot connect to {url}: {exc}"
    await conn.close()
    return None


async def create_schema(url: str) -> str:
    """Create an empty schema with a random name; return `url` using it."""
    schema = f"steplog_test_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    return with_search_path(url, schema)


async def drop_schema(url: str) -> None:
    """Drop the schema `create_schema` made for `url`, with everything in it."""
    conn = await asyncpg.connect(url)
    try:
        schema = await conn.fetchval("SELECT current_schema()")
        if not (schema or "").startswith("steplog_test_"):
            raise ValueError(f"refusing to drop schema {schema!r}: not made by create_schema")
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def scratch_schema(url: str) -> AsyncIterator[str]:
    """Create an empty schema, yield a URL that uses it, and drop it afterwards."""
    scratch = await create_schema(url)
    try:
        yield scratch
    finally:
        await drop_schema(scratch)
