"""Export events (filtered) as JSONL or CSV, streamed in constant memory.

An export is a sequence of chunks (one per page of up to 5,000 rows), so the
CLI writes it to a file and the HTTP route streams it without ever holding
more than one page. Each page is its own short read; no read transaction is
held across pages, so a slow HTTP client can never stop the writer's WAL
checkpoints. It is still a consistent snapshot: the head (`pos`, `hash`) is
fixed when the export starts and only rows up to it are read, and rows up to
the head never change in an append-only log.

JSONL lines are built by SQLite's `json_object` (C, not Python) on SQLite, in
Python on PostgreSQL, one event per line with the chain fields, framed by a
header and a trailer line:

    {"steplog_export": 1, "full": true, "filters": {}, "head": {"pos": P, "hash": H}, …}
    {"pos": 1, "run_id": …, "seq": 1, "type": …, "step": …, "message": …, "pct": …,
     "data": "<the event's JSON text, as stored and hashed>", "attempt": 1, "at": …,
     "hash": …, "prev_hash": …}
    …
    {"steplog_export_end": 1, "events": N, "last": {"pos": …, "hash": …}}

`data` stays the stored JSON *text* (decode it with a second JSON parse): the
hash covers those exact bytes, and re-encoding a parsed value could change
them. `prev_hash` is the hash of the row at `pos - 1` in the log, whether or
not that row is in the export, which is what lets `verify --file` check each
row of a filtered export on its own. The trailer lets it notice a file cut
short. CSV has the same columns (and no header or trailer): it is for reading
in a spreadsheet, not for verification.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from storage import chain
from storage.audit.model import AuditError, UnknownRun
from storage.audit.source import AuditSource, head
from storage.audit.verify import open_source
from storage.model import EVENT_TYPES

FORMATS = ("jsonl", "csv")
PAGE = 5000
EXPORT_VERSION = 1

CSV_COLUMNS = (
    "pos", "run_id", "seq", "type", "step", "message", "pct", "data", "attempt", "at", "hash",
    "prev_hash",
)  # fmt: skip

_PREV_HASH = (
    f"CASE WHEN e.pos = 1 THEN '{chain.GENESIS_HASH}'"
    " ELSE (SELECT p.hash FROM events p WHERE p.pos = e.pos - 1) END"
)
# pct as a number that parses back to exactly the stored double: SQLite prints 15
# significant digits, enough for every value steplog stores (two decimals); any other
# value is printed with 17.
_PCT = (
    "CASE WHEN e.pct IS NULL OR CAST(printf('%!.15g', e.pct) AS REAL) = e.pct THEN e.pct"
    " ELSE json(printf('%!.17g', e.pct)) END"
)
_JSON_LINE = (
    "json_object('pos', e.pos, 'run_id', e.run_id, 'seq', e.seq, 'type', e.type,"
    f" 'step', e.step, 'message', e.message, 'pct', {_PCT}, 'data', e.data,"
    f" 'attempt', e.attempt, 'at', e.at, 'hash', e.hash, 'prev_hash', {_PREV_HASH})"
)
_CSV_COLUMNS_SQL = (
    "e.pos, e.run_id, e.seq, e.type, e.step, e.message, e.pct, e.data, e.attempt, e.at, e.hash,"
    f" {_PREV_HASH}"
)


def parse_time(text: str) -> str:
    """A user's ISO-8601 date or time as steplog writes `at` (UTC, microseconds, `Z`).

    A time without an offset is UTC. Because every `at` has this one fixed-width
    form, comparing the strings compares the times.
    """
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise AuditError(
            f"not an ISO-8601 time: {text[:60]!r} (e.g. 2026-11-25 or 2026-11-25T22:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class ExportFilter:
    """Which events to export. `since` is inclusive, `until` exclusive (both `at`)."""

    run: str | None = None
    function: str | None = None
    since: str | None = None
    until: str | None = None
    types: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        *,
        run: str | None = None,
        function: str | None = None,
        since: str | None = None,
        until: str | None = None,
        types: tuple[str, ...] | list[str] = (),
    ) -> ExportFilter:
        """Validate and normalise what a user typed; raises `AuditError` naming the bad part."""
        wanted = tuple(dict.fromkeys(t.strip() for raw in types for t in raw.split(",") if t))
        unknown = [t for t in wanted if t not in EVENT_TYPES]
        if unknown:
            known = ", ".join(sorted(EVENT_TYPES))
            raise AuditError(f"unknown event type(s) {', '.join(unknown)}; known: {known}")
        for name, value in (("run", run), ("function", function)):
            if value and "\x00" in value:  # no id or name holds one (PostgreSQL text cannot)
                raise AuditError(f"the {name} filter holds a NUL character")
        return cls(
            run=run or None,
            function=function or None,
            since=parse_time(since) if since else None,
            until=parse_time(until) if until else None,
            types=wanted,
        )

    @property
    def full(self) -> bool:
        """No filter: the export is the whole chain, verifiable end to end."""
        return not (self.run or self.function or self.since or self.until or self.types)

    @property
    def whole_runs(self) -> bool:
        """Only run/function filters: every exported run is complete (seq checks apply)."""
        return not (self.since or self.until or self.types)

    def as_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "run": self.run,
            "function": self.function,
            "since": self.since,
            "until": self.until,
            "type": list(self.types) or None,
        }
        return {key: value for key, value in found.items() if value is not None}

    def where(self) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if self.run:
            clauses.append("e.run_id = ?")
            args.append(self.run)
        if self.function:
            clauses.append("e.run_id IN (SELECT id FROM runs WHERE function = ?)")
            args.append(self.function)
        if self.since:
            clauses.append("e.at >= ?")
            args.append(self.since)
        if self.until:
            clauses.append("e.at < ?")
            args.append(self.until)
        if self.types:
            clauses.append(f"e.type IN ({','.join('?' * len(self.types))})")
            args.extend(self.types)
        return clauses, args


class Export:
    """One export in progress: `next_chunk()` until it returns None, then `close()`.

    Thread-safe in the one way async callers need: each call may come from a
    different worker thread, and `close()` waits for a read in progress.
    """

    def __init__(
        self, url: str | Path, filters: ExportFilter, fmt: str = "jsonl", *, page: int = PAGE
    ) -> None:
        if fmt not in FORMATS:
            raise AuditError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        self.filters = filters
        self.format = fmt
        self.page = page
        self.count = 0
        self._lock = threading.Lock()
        self._source: AuditSource = open_source(url)
        try:
            head_pos, head_hash = head(self._source, 0)
            self.head_pos, self.head_hash = head_pos, head_hash or chain.GENESIS_HASH
            if filters.run and not self._source.fetchone(
                "SELECT 1 FROM runs WHERE id = ?", (filters.run,)
            ):
                raise UnknownRun(f"no run with id {filters.run[:64]!r}")
        except BaseException:
            self._source.close()
            raise
        self._cursor = 0  # pos (or seq, when exporting one run) of the last row read
        self._last: tuple[int, str] | None = None
        self._stage = "header"

    @property
    def media_type(self) -> str:
        return "application/jsonl" if self.format == "jsonl" else "text/csv; charset=utf-8"

    def __iter__(self) -> Iterator[bytes]:
        try:
            while (chunk := self.next_chunk()) is not None:
                yield chunk
        finally:
            self.close()

    def next_chunk(self) -> bytes | None:
        """The next piece of the export (header, a page of rows, trailer), or None at the end."""
        with self._lock:
            if self._stage == "header":
                self._stage = "rows"
                return self._header()
            if self._stage == "rows":
                chunk = self._page()
                if chunk is not None:
                    return chunk
                self._stage = "trailer"
            if self._stage == "trailer":
                self._stage = "done"
                return self._trailer()
            return None

    def close(self) -> None:
        with self._lock:
            self._stage = "done"
            self._source.close()

    def _header(self) -> bytes:
        if self.format == "csv":
            buffer = io.StringIO()
            csv.writer(buffer).writerow(CSV_COLUMNS)
            return buffer.getvalue().encode()
        header = {
            "steplog_export": EXPORT_VERSION,
            "full": self.filters.full,
            "filters": self.filters.as_json(),
            "head": {"pos": self.head_pos, "hash": self.head_hash},
            "exported_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "chain": "hash = sha256_hex(prev_hash + canonical); see the README, 'Hash chain'",
        }
        return (json.dumps(header, ensure_ascii=False, separators=(",", ":")) + "\n").encode()

    def _trailer(self) -> bytes | None:
        if self.format == "csv":
            return None
        last = None if self._last is None else {"pos": self._last[0], "hash": self._last[1]}
        trailer = {"steplog_export_end": EXPORT_VERSION, "events": self.count, "last": last}
        return (json.dumps(trailer, separators=(",", ":")) + "\n").encode()

    def _page(self) -> bytes | None:
        clauses, args = self.filters.where()
        by_seq = self.filters.run is not None  # one run: walk its (run_id, seq) index
        key = "e.seq" if by_seq else "e.pos"
        clauses = [f"{key} > ?", "e.pos <= ?", *clauses]
        in_sql = self.format == "jsonl" and self._source.builds_json
        columns = _JSON_LINE if in_sql else _CSV_COLUMNS_SQL
        sql = (
            f"SELECT {key}, {columns} FROM events e WHERE {' AND '.join(clauses)}"
            f" ORDER BY {key} LIMIT ?"
        )
        rows = self._source.fetchall(sql, (self._cursor, self.head_pos, *args, self.page))
        if not rows:
            return None
        self._cursor = rows[-1][0]
        self.count += len(rows)
        if self.format == "jsonl" and not in_sql:
            rows = [(row[0], _json_line(row[1:])) for row in rows]
        if self.format == "jsonl":
            last = json.loads(rows[-1][1])
            self._last = (last["pos"], last["hash"])
            return ("\n".join([row[1] for row in rows]) + "\n").encode()
        self._last = (rows[-1][1], rows[-1][11])
        buffer = io.StringIO()
        csv.writer(buffer).writerows(row[1:] for row in rows)
        return buffer.getvalue().encode()


def _json_line(columns: tuple[Any, ...]) -> str:
    """One event's JSONL line from its columns, as SQLite's `json_object` writes it."""
    return json.dumps(dict(zip(CSV_COLUMNS, columns, strict=True)), **_COMPACT)


_COMPACT: dict[str, Any] = {"ensure_ascii": False, "separators": (",", ":"), "allow_nan": False}
