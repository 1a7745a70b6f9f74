"""What the audit reads a log through: one typed row-source per backend.

The audit's checks (the chain scan and its diagnosis, positions, per-run
`seq` runs, run records, anchors, the export and the timeline) are written
once, over this protocol. A backend's source (`storage.audit.sqlite`,
`storage.audit.postgres`) only runs queries in one read snapshot and answers
the few questions that are about the backend itself: how it guards `events`
against rewrites (its triggers), whether it remembers the highest position it
ever handed out, and how fast it can build a row's canonical text.

The queries the shared checks send are plain SQL both databases take, written
with `?` placeholders; a source rewrites them to its own parameter style.
Run ids are compared in Python while three sorted streams are merged, so each
source sorts them the way Python does (`run_order`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from storage.audit.model import Problem

Row = tuple[Any, ...]
"""A full event row: (pos, run_id, seq, type, step, message, pct, data, attempt, at, hash)."""

FastRow = tuple[bytes, Any]
"""(canonical UTF-8, or b"" to have Python check the row exactly; hash), pos after pos."""

EVENT_COLUMNS = "pos, run_id, seq, type, step, message, pct, data, attempt, at, hash"
"""In the order of `Row` (and of `storage.model.Event`)."""


class RowCursor(Protocol):
    """Rows of one query, read as they are needed (several may be open at once)."""

    def fetchone(self) -> Any:
        """The next row, or None after the last."""

    def fetchmany(self, size: int) -> list[Any]:
        """Up to `size` more rows; empty after the last."""


class AuditSource(Protocol):
    """One log opened read-only for the audit. Used by one thread at a time."""

    label: str
    """How a report names the log (a path, or a URL without its password)."""
    run_order: str
    """SQL after `ORDER BY run_id` that sorts run ids as Python compares them."""
    scan_hint: str
    """SQL after `FROM events` for a query that is cheapest as one plain scan."""
    builds_json: bool
    """Whether `storage.audit.export` may have the database write its JSONL lines."""

    def snapshot(self) -> AbstractContextManager[None]:
        """One read snapshot: every query inside sees the same committed state. A snapshot
        taken inside another joins it (so a caller can read before `verify` and be sure
        `verify` sees the same state)."""

    def has_table(self, name: str) -> bool:
        """Whether the log has table `name` (older schemas lack newer tables)."""

    def cursor(self, sql: str, args: Sequence[Any] = ()) -> RowCursor:
        """Rows of `sql`, fetched as they are read (inside `snapshot` only)."""

    def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """The first row of `sql`, or None."""

    def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """Every row of `sql` (for bounded queries: they carry a LIMIT)."""

    def fast_batches(self, start_pos: int, batch: int) -> Iterator[list[FastRow]]:
        """The rows from `start_pos` on in `pos` order, as `FastRow`s, in batches."""

    def check_triggers(self) -> Problem | None:
        """Whether the database still refuses to update or delete events."""

    def assigned_high(self) -> int | None:
        """The highest `pos` the database ever handed out, when it keeps one (SQLite's
        AUTOINCREMENT does; PostgreSQL's writer numbers from the head, so it does not)."""

    def secret(self, name: str) -> bytes | None:
        """The log's secret `name` (the run-token key), or None when none was made."""

    def close(self) -> None:
        """Give the connection back; the source cannot be used afterwards."""


def head(source: AuditSource, start_pos: int = 1) -> tuple[int, str | None]:
    """(highest pos, its hash) of the rows at `start_pos` and above; (0, None) when none."""
    row = source.fetchone(
        "SELECT pos, hash FROM events WHERE pos >= ? ORDER BY pos DESC LIMIT 1", (start_pos,)
    )
    return (0, None) if row is None else (int(row[0]), str(row[1]))


def hash_at(source: AuditSource, pos: int) -> str | None:
    """The hash stored at `pos`, or None when there is no such row."""
    row = source.fetchone("SELECT hash FROM events WHERE pos = ?", (pos,))
    return None if row is None else str(row[0])


def full_rows(source: AuditSource, from_pos: int, limit: int) -> list[Row]:
    """Up to `limit` full rows from `from_pos` on, in order (for checks and diagnosis)."""
    return [
        tuple(row)
        for row in source.fetchall(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE pos >= ? ORDER BY pos LIMIT ?",
            (from_pos, limit),
        )
    ]
