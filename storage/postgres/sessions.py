"""How the PostgreSQL log's connections are set up: session settings, the writer's
prepared statements, the NOTIFY channel's name, and a URL fit for logs."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from storage.sqlfiles import POSTGRES as QUERIES

SESSION_SETTINGS = {"jit": "off"}
"""Short OLTP statements only: JIT compilation would cost more than it saves (and
makes asyncpg's one-off type introspection slow)."""


def writer_settings(idle_limit_ms: str) -> dict[str, str]:
    """The writer connection's session settings.

    A writer that freezes or loses its network mid-transaction would hold the
    append lock (and so every process's appends) until TCP gave up: the server
    ends such a session after `idle_limit_ms` instead. The short way's
    transaction is implicit (storage/postgres/cached.py): READ COMMITTED whatever
    the server's default, as `BEGIN ISOLATION LEVEL READ COMMITTED` gives the long way.
    """
    return {
        **SESSION_SETTINGS,
        "idle_in_transaction_session_timeout": idle_limit_ms,
        "default_transaction_isolation": "read committed",
    }


async def prepare_writer(conn: asyncpg.Connection) -> None:
    """Prepare the statements run under the append lock, before any lock is held:
    the first use of a statement makes asyncpg look its types up, a few round
    trips that must not be spent while every process waits."""
    for name in ("lock_for_append", "write_batch", "append_batch"):
        await conn.prepare(QUERIES[name])


def channel_name(schema: str) -> str:
    """This log's NOTIFY channel: one per schema, and only [a-z0-9_] (it is spliced into SQL)."""
    return "steplog_" + re.sub(r"[^a-z0-9_]", "_", schema.lower())[:50]


def redacted(url: str) -> str:
    """The URL without its password, for logs and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
