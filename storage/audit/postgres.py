"""The audit's row-source for PostgreSQL: one read-only session, the same checks as SQLite.

A verification reads inside one REPEATABLE READ, READ ONLY transaction (one
snapshot, no write, no lock a writer waits for), and the session itself is
read-only (`default_transaction_read_only`), so nothing the audit sends can
write. The checks are the shared ones (`storage.audit.verify`); what is
PostgreSQL's own is answered here: the two append-only triggers, and that no
high-water mark of positions exists (the writer numbers `pos` from the head
under the append lock, so rows cut off the end leave no trace but the run
records, and an anchor is what proves the end). Canonical text is built in
Python (`storage.audit.scan.fast_row`): PostgreSQL's JSON functions do not
write compact JSON.

The audit's callers are synchronous (the CLI, or a worker thread under the
HTTP routes), so the source runs asyncpg on an event loop of its own, one call
at a time. Run ids are sorted `COLLATE "C"` (byte order, which for UTF-8 is
code point order), the order Python compares them in.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import Awaitable, Iterator, Sequence
from typing import Any, TypeVar

import asyncpg

from storage.audit.model import TRIGGERS, AuditError, Problem
from storage.audit.scan import fast_row
from storage.audit.source import EVENT_COLUMNS, FastRow

T = TypeVar("T")

SESSION = {"jit": "off", "default_transaction_read_only": "on"}
PREFETCH = 1000
"""Rows a cursor fetches per round trip."""

# (name, pg_trigger.tgtype bits, what it refuses): ROW=1, BEFORE=2, DELETE=8, UPDATE=16,
# TRUNCATE=32, exactly as storage/postgres/001_initial.sql creates them
# (003_archive.sql redefines the function, not the triggers).
TRIGGERS_EXPECTED = (
    ("events_no_update_or_delete", 1 | 2 | 8 | 16, "UPDATE and DELETE"),
    ("events_no_truncate", 2 | 32, "TRUNCATE"),
)
GUARD = "steplog_events_append_only"

_TRIGGERS_SQL = (
    "SELECT t.tgname, t.tgtype, t.tgenabled::text, t.tgqual IS NULL, p.proname, p.prosrc"
    " FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid"
    " WHERE t.tgrelid = 'events'::regclass AND NOT t.tgisinternal"
)
_PLACEHOLDER = re.compile(r"\?")


def dollar_params(sql: str) -> str:
    """The shared queries' `?` placeholders as PostgreSQL's `$1, $2, …`."""
    count = iter(range(1, 1000))
    return _PLACEHOLDER.sub(lambda _: f"${next(count)}", sql)


class PostgresSource:
    """A PostgreSQL log, read-only (see the module docstring)."""

    run_order = ' COLLATE "C"'
    scan_hint = ""
    builds_json = False

    def __init__(self, url: str) -> None:
        self.label = url.split("@")[-1]  # never echo a password
        self._loop = asyncio.new_event_loop()
        self._conn: asyncpg.Connection | None = None
        self._depth = 0
        try:
            self._conn = self._run(asyncpg.connect(url, server_settings=SESSION, timeout=30))
            if not self._run(self._conn.fetchval(_HAS_TABLES)):
                raise AuditError(
                    f"{self.label} is not a steplog log (it has no events and runs tables)"
                )
        except BaseException:
            self.close()
            raise

    def _run(self, coro: Awaitable[T]) -> T:
        try:
            return self._loop.run_until_complete(coro)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise AuditError(f"cannot read the PostgreSQL log {self.label}: {exc}") from None

    @property
    def conn(self) -> asyncpg.Connection:
        if self._conn is None:
            raise AuditError("the PostgreSQL log was closed")
        return self._conn

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """One REPEATABLE READ, READ ONLY transaction; a nested call joins the open one."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        transaction = self.conn.transaction(isolation="repeatable_read", readonly=True)
        self._run(transaction.start())
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            self._run(transaction.rollback())  # nothing to keep: it only read

    def has_table(self, name: str) -> bool:
        return bool(self._run(self.conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name)))

    def cursor(self, sql: str, args: Sequence[Any] = ()) -> _Cursor:
        return _Cursor(self, self._run(self.conn.cursor(dollar_params(sql), *args)))

    def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Any:
        row = self._run(self.conn.fetchrow(dollar_params(sql), *args))
        return None if row is None else tuple(row)

    def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return [tuple(row) for row in self._run(self.conn.fetch(dollar_params(sql), *args))]

    def fast_batches(self, start_pos: int, batch: int) -> Iterator[list[FastRow]]:
        cursor = self.cursor(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE pos >= ? ORDER BY pos", (start_pos,)
        )
        while rows := cursor.fetchmany(batch):
            yield [fast_row(row) for row in rows]

    def check_triggers(self) -> Problem | None:
        """Both append-only triggers exist, enabled, unconditional, for the statements the
        schema gives them, calling the guard function with its body unchanged."""
        present = {row[0]: row[1:] for row in self.fetchall(_TRIGGERS_SQL)}
        body = _normalise(_expected_guard())
        wrong = []
        for name, kind, verbs in TRIGGERS_EXPECTED:
            if name not in present:
                wrong.append(f"{name} is missing ({verbs} of events no longer refused)")
                continue
            tgtype, enabled, unconditional, function, source = present[name]
            if enabled == "D":
                wrong.append(f"{name} is disabled ({verbs} of events no longer refused)")
            elif (
                tgtype != kind
                or not unconditional
                or function != GUARD
                or _normalise(source) != body
            ):
                wrong.append(f"{name} was altered (it may no longer refuse {verbs})")
        if not wrong:
            return None
        return Problem(TRIGGERS, None, "append-only trigger " + "; ".join(wrong))

    def assigned_high(self) -> int | None:
        return None

    def secret(self, name: str) -> bytes | None:
        row = self.fetchone("SELECT value FROM meta WHERE key = ?", (f"secret:{name}",))
        return None if row is None else bytes(row[0])

    def close(self) -> None:
        if self._loop.is_closed():
            return
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._conn.close(timeout=5))
            self._conn = None
        self._loop.close()


_HAS_TABLES = "SELECT to_regclass('events') IS NOT NULL AND to_regclass('runs') IS NOT NULL"


class _Cursor:
    """A server-side cursor read `PREFETCH` rows per round trip."""

    def __init__(self, source: PostgresSource, cursor: Any) -> None:
        self.source = source
        self.pg = cursor
        self.buffer: deque[tuple[Any, ...]] = deque()
        self.done = False

    def _fill(self, want: int) -> None:
        while len(self.buffer) < want and not self.done:
            size = max(PREFETCH, want - len(self.buffer))
            rows = self.source._run(self.pg.fetch(size))
            self.buffer.extend(tuple(row) for row in rows)
            self.done = len(rows) < size

    def fetchone(self) -> Any:
        self._fill(1)
        return self.buffer.popleft() if self.buffer else None

    def fetchmany(self, size: int) -> list[Any]:
        self._fill(size)
        take = self.buffer.popleft
        return [take() for _ in range(min(size, len(self.buffer)))]


def _expected_guard() -> str:
    """The guard's body as the newest migration defining it has it (003_archive.sql lets
    archived positions be deleted)."""
    from storage.postgres.migrations import available

    body = None
    for _version, _name, sql in available():
        match = re.search(rf"FUNCTION {GUARD}\(\).*?\$\$(.*?)\$\$", sql, re.S)
        if match is not None:
            body = match.group(1)
    if body is None:  # pragma: no cover - the schema files ship with the package
        raise AuditError(f"the schema no longer defines {GUARD}")
    return body


def _normalise(sql: str) -> str:
    return " ".join(sql.split()).lower()
