"""Real logs for the audit tests, on SQLite and on PostgreSQL, and the means to tamper with them.

One log per backend and module is written by the real worker pool running real
functions (`ticker`, plus one that writes awkward text). Each tampering test
gets its own copy (SQLite's backup API; `steplog log copy` into a fresh
PostgreSQL schema) and changes it the way someone holding the database's keys
would: the append-only triggers are dropped or disabled first and put back
unless the test is about their absence, and on PostgreSQL the constraints an
attacker would have to drop (pos >= 1, the run foreign key) are dropped.
Statements are written once, with `?` placeholders, for both databases.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import BaseModel

from functions.registry import function
from functions.worker import WorkerPool
from storage import open_log
from storage.audit.postgres import dollar_params
from storage.backends import log_file
from storage.copy import copy_log
from storage.sqlite import migrations
from tests.support.wait import wait_for

ODD_TEXTS = [
    'quotes " and \\ backslash',
    "line\nbreak\r\ncarriage\ttab",
    "control \x00 \x01 \x1f \x7f",
    "Zoë · 東京 · emoji 🚀 · U+2028 \u2028 U+2029 \u2029",
    "</script><script>alert(1)</script>",
    "",
]
Statement = str | tuple[str, tuple[Any, ...]]


class OddParams(BaseModel):
    nul: bool = True
    """Whether messages may hold NUL (PostgreSQL text cannot: its writer refuses them)."""


@function("audit_odd_text", params=OddParams)
async def odd_text(ctx: Any, params: OddParams) -> dict[str, Any]:
    """Writes every awkward string into message and data, with awkward pct values."""
    async with ctx.step("odd", "odd text: ünïcödé"):
        for i, text in enumerate(ODD_TEXTS):
            if not params.nul:
                text = text.replace("\x00", "\\0")
            pct = [0.125, 12.345, 33.333333, 99.995, 0.005, 100][i]
            await ctx.progress(pct, text, {"text": text, "i": i, "at": datetime.now(UTC)})
            await ctx.log(text, [text, None, 1.5, True])
    return {"texts": ODD_TEXTS}


async def build(url: str) -> None:
    """About 3,500 events from real runs: succeeded, failed and cancelled."""
    events = open_log(url)
    await events.open()
    pool = WorkerPool(events, concurrency=4, poll_interval=0.02)
    pool.start()
    try:
        runs = [(await events.create_run("ticker", {"count": 300, "interval_ms": 0}))[0].id
                for _ in range(10)]  # fmt: skip
        failing = {"count": 50, "interval_ms": 0, "fail_at": 20}
        runs.append((await events.create_run("ticker", failing))[0].id)
        nul = log_file(url) is not None  # a SQLite file; PostgreSQL text cannot hold NUL
        runs.append((await events.create_run("audit_odd_text", {"nul": nul}))[0].id)
        slow, _ = await events.create_run("ticker", {"count": 10_000, "interval_ms": 5})
        pool.notify()

        async def slow_is_going() -> bool:
            return (await events.get_run(slow.id)).last_seq > 5

        await wait_for(slow_is_going, 60, what="the slow run to pass seq 5")
        await events.cancel_run(slow.id, "enough")
        pool.cancel(slow.id)
        runs.append(slow.id)

        async def all_finished() -> bool:
            states = [await events.get_run(run_id) for run_id in runs]
            return all(run.status.finished for run in states)

        await wait_for(all_finished, 60, what="every run to finish")
    finally:
        await pool.stop()
        await events.close()


def schema_triggers() -> list[str]:
    """The append-only triggers on `events` as the newest migration defining each has them
    (004_archive.sql redefines events_no_delete), update first."""
    found: dict[str, str] = {}
    for _number, sql in migrations.available():
        for match in re.finditer(r"CREATE TRIGGER (events_no_\w+)\b.*?END;", sql, re.S):
            found[match.group(1)] = match.group(0)
    return [found["events_no_update"], found["events_no_delete"]]


@dataclass
class Log:
    """A copy of a real log to tamper with, and what it held before."""

    url: str
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    backend: str = "sqlite"
    triggers: tuple[str, ...] = ("events_no_update", "events_no_delete")

    @property
    def head(self) -> int:
        return int(self.rows[-1][0])

    def row(self, pos: int) -> tuple[Any, ...]:
        return self.rows[pos - 1]

    def sql(self, *statements: Statement, triggers: bool = True) -> None:
        """Run statements with the append-only triggers off; restore them if `triggers`."""
        conn = sqlite3.connect(self.url, isolation_level=None)
        try:
            for name in self.triggers:
                conn.execute(f"DROP TRIGGER IF EXISTS {name}")
            for statement in statements:
                sql, args = statement if isinstance(statement, tuple) else (statement, ())
                conn.execute(sql, args)
            if triggers:
                for trigger in schema_triggers():
                    conn.execute(trigger)
        finally:
            conn.close()

    def cover_sequence(self, head: int) -> list[Statement]:
        """The statements that make the database forget positions above `head` were used."""
        return [("UPDATE sqlite_sequence SET seq = ? WHERE name = 'events'", (head,))]

    def alter_a_trigger(self) -> str:
        """Replace one trigger by one that refuses nothing; the name of the altered one."""
        self.sql(
            "CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN SELECT 1; END",
            schema_triggers()[0],
            triggers=False,
        )
        return "events_no_delete"

    def read_rows(self) -> None:
        conn = sqlite3.connect(self.url)
        try:
            self.rows = conn.execute(f"SELECT {COLUMNS} FROM events ORDER BY pos").fetchall()
        finally:
            conn.close()


COLUMNS = "pos, run_id, seq, type, step, message, pct, data, attempt, at, hash"


class PostgresLog(Log):
    """The same, in a PostgreSQL schema of its own."""

    def __init__(self, url: str) -> None:
        super().__init__(url, backend="postgres",
                         triggers=("events_no_update_or_delete", "events_no_truncate"))  # fmt: skip

    def sql(self, *statements: Statement, triggers: bool = True) -> None:
        async def run() -> None:
            conn = await asyncpg.connect(self.url)
            try:
                async with conn.transaction():
                    await conn.execute("ALTER TABLE events DISABLE TRIGGER USER")
                    for statement in statements:
                        sql, args = statement if isinstance(statement, tuple) else (statement, ())
                        await conn.execute(dollar_params(sql), *args)
                    if triggers:
                        await conn.execute("ALTER TABLE events ENABLE TRIGGER USER")
                    else:
                        for name in self.triggers:
                            await conn.execute(f"DROP TRIGGER {name} ON events")
            finally:
                await conn.close()

        asyncio.run(run())

    def cover_sequence(self, head: int) -> list[Statement]:
        return []  # PostgreSQL numbers from the head: there is no high-water mark to cover

    def alter_a_trigger(self) -> str:
        self.sql(
            "DROP TRIGGER events_no_update_or_delete ON events",
            "CREATE TRIGGER events_no_update_or_delete BEFORE UPDATE ON events"
            " FOR EACH ROW EXECUTE FUNCTION steplog_events_append_only()",
        )
        return "events_no_update_or_delete"

    def read_rows(self) -> None:
        async def read() -> list[tuple[Any, ...]]:
            conn = await asyncpg.connect(self.url)
            try:
                rows = await conn.fetch(f"SELECT {COLUMNS} FROM events ORDER BY pos")
            finally:
                await conn.close()
            return [tuple(row) for row in rows]

        self.rows = asyncio.run(read())


def backup(source: Path, target: Path) -> None:
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


async def copy_postgres(source_url: str, target_url: str) -> None:
    """`steplog log copy` into the new schema, then drop what an attacker would drop."""
    source = open_log(source_url)
    await source.open()
    try:
        await copy_log(source, target_url)
    finally:
        await source.close()
    conn = await asyncpg.connect(target_url)
    try:
        await conn.execute(
            "ALTER TABLE events DROP CONSTRAINT events_pos_check,"
            " DROP CONSTRAINT events_run_id_fkey"
        )
    finally:
        await conn.close()
