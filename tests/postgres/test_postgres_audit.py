"""`steplog audit verify` and `anchor` on a PostgreSQL log: the same verdicts as on SQLite.

A real log is written through the backend, then tampered with directly in
PostgreSQL (as the superuser, disabling the append-only trigger the way an
attacker with the database's keys could), and the real CLI names the position
and the kind.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator

import asyncpg
import pytest

from storage import EventType, NewEvent, open_log
from tests.support import postgres as testing


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with testing.scratch_schema(testing.postgres_url_for_tests()) as url:
        log = open_log(url)
        await log.open()
        run, _ = await log.create_run("ticker", {"count": 3})
        claimed = await log.claim_run("w", 30, ["ticker"])
        assert claimed is not None
        for i in range(8):
            await log.append(NewEvent(run.id, EventType.LOG, 1, message=f"line {i} Zoë"))
        await log.close()
        yield url


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream", "audit", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def tamper(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_or_delete")
        await conn.execute(sql)
        await conn.execute("ALTER TABLE events ENABLE TRIGGER events_no_update_or_delete")
    finally:
        await conn.close()


async def test_untouched_log_verifies_and_anchors(pg_url: str) -> None:
    result = audit("verify", "--db", pg_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: 10 events, head pos 10 hash ")
    line = audit("anchor", "--db", pg_url).stdout.strip()
    assert line.startswith("steplog-anchor pos=10 hash=")
    assert audit("verify", "--db", pg_url, "--anchor", line).returncode == 0


async def test_changed_data_is_named(pg_url: str) -> None:
    await tamper(pg_url, "UPDATE events SET message = 'forged' WHERE pos = 4")
    result = audit("verify", "--db", pg_url)
    assert result.returncode == 1
    assert "FAIL pos 4: changed" in result.stdout


async def test_deleted_middle_row_is_missing(pg_url: str) -> None:
    await tamper(pg_url, "DELETE FROM events WHERE pos = 6")
    result = audit("verify", "--db", pg_url)
    assert result.returncode == 1
    assert "FAIL pos 6: missing" in result.stdout


async def test_rows_cut_off_the_end_are_caught_by_the_anchor(pg_url: str) -> None:
    line = audit("anchor", "--db", pg_url).stdout.strip()
    await tamper(pg_url, "DELETE FROM events WHERE pos >= 9")
    assert audit("verify", "--db", pg_url).returncode == 0  # a shorter chain is still a chain
    result = audit("verify", "--db", pg_url, "--anchor", line)
    assert result.returncode == 1
    assert "pos 10: truncated" in result.stdout


async def test_dropped_trigger_is_reported(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("DROP TRIGGER events_no_truncate ON events")
    finally:
        await conn.close()
    result = audit("verify", "--db", pg_url)
    assert result.returncode == 1
    assert "triggers" in result.stdout and "events_no_truncate" in result.stdout
