"""`steplog migrate` and `steplog log copy`, run as the real CLI in a subprocess."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from storage import (
    EventLog,
    EventType,
    IdempotencyConflict,
    NewEvent,
    SteplogError,
    chain,
    open_log,
)
from storage.postgres.log import PostgresEventLog
from tests.support.launcher import ROOT


def steplog(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def fill(log: EventLog) -> None:
    """A log with every kind of run: finished three ways, running, queued, non-ASCII text."""
    for outcome in ("succeeded", "failed", "cancelled", "running"):
        run, _ = await log.create_run("ticker", {"outcome": outcome, "name": "Zoë ✓"})
        claimed = await log.claim_run("w1", 30, ["ticker"])
        assert claimed is not None and claimed.id == run.id
        await log.append(NewEvent(run.id, EventType.STEP_STARTED, 1, "fetch", "Fetching 日本"))
        for pct in (12.345, 50, 99.999):
            await log.append(
                NewEvent(
                    run.id, EventType.STEP_PROGRESS, 1, "fetch", "line\nbreak", pct, {"p": pct}
                )
            )
        if outcome == "succeeded":
            await log.append(
                NewEvent(run.id, EventType.RUN_SUCCEEDED, 1, data={"result": {"ok": "✓"}})
            )
        elif outcome == "failed":
            await log.append(NewEvent(run.id, EventType.RUN_FAILED, 1, data={"error": "boom"}))
        elif outcome == "cancelled":
            assert await log.cancel_run(run.id, "enough")
    await log.create_run("scrape", {"url": "https://example.org"}, idempotency_key="delivery-1")


async def test_migrate_creates_then_reports_the_schema(pg_url: str) -> None:
    first = steplog("migrate", "--db", pg_url)
    assert first.returncode == 0, first.stderr
    assert "migrated from version 0 to 4" in first.stdout
    again = steplog("migrate", "--db", pg_url)
    assert again.returncode == 0 and "already at version 4" in again.stdout
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT max(version) FROM schema_version") == 4
        assert await conn.fetchval("SELECT count(*) FROM events") == 0
    finally:
        await conn.close()


async def test_a_schema_newer_than_this_steplog_is_refused(pg_url: str) -> None:
    assert steplog("migrate", "--db", pg_url).returncode == 0
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("INSERT INTO schema_version (version, name) VALUES (99, 'future')")
    finally:
        await conn.close()
    with pytest.raises(SteplogError, match="newer than this steplog"):
        await PostgresEventLog(pg_url).open()


async def test_log_copy_moves_a_sqlite_log_keeping_pos_seq_and_hashes(
    tmp_path: Path, pg_url: str
) -> None:
    path = tmp_path / "old.db"
    source = open_log(str(path))
    await source.open()
    await fill(source)
    events, runs = await source.read_all(0, 10_000), await source.list_runs()
    secret = await source.secret("run-token")
    await source.close()

    done = steplog("log", "copy", "--from", f"sqlite://{path}", "--to", pg_url)
    assert done.returncode == 0, done.stderr
    assert f"copied {len(runs)} runs and {len(events)} events; chain verified" in done.stdout

    target = PostgresEventLog(pg_url)
    await target.open()
    try:
        assert await target.read_all(0, 10_000) == events  # every field, byte for byte
        assert await target.list_runs() == runs
        assert await target.secret("run-token") == secret  # old run tokens keep working
        # The copy is a live log: claims, idempotency (fingerprints included) and the
        # chain carry on from it.
        again, created = await target.create_run(
            "scrape", {"url": "https://example.org"}, idempotency_key="delivery-1"
        )
        assert not created and again.status == "queued"
        with pytest.raises(IdempotencyConflict):
            await target.create_run(
                "scrape", {"url": "https://example.net"}, idempotency_key="delivery-1"
            )
        assert (await target.claim_run("w2", 30, ["scrape"])) is not None
        [started] = await target.read_all(events[-1].pos)
        assert started.pos == events[-1].pos + 1 and started.type == EventType.RUN_STARTED
        canonical = chain.canonical_row(
            started.pos, started.run_id, started.seq, started.type, started.step,
            started.message, started.pct, started.data, started.attempt, started.at,
        )  # fmt: skip
        assert started.hash == chain.link(events[-1].hash, canonical)
    finally:
        await target.close()


async def test_log_copy_refuses_a_broken_chain_and_leaves_the_target_empty(
    tmp_path: Path, pg_url: str
) -> None:
    path = tmp_path / "tampered.db"
    source = open_log(str(path))
    await source.open()
    await fill(source)
    await source.close()
    conn = sqlite3.connect(path)  # a forger who can drop the trigger
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET message = 'forged' WHERE pos = 5")
    conn.commit()
    conn.close()

    refused = steplog("log", "copy", "--from", str(path), "--to", pg_url)
    assert refused.returncode != 0
    assert "event pos 5" in refused.stderr and "hash" in refused.stderr
    conn2 = await asyncpg.connect(pg_url)
    try:
        counts = await conn2.fetchrow(
            "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM events)"
        )
        assert counts is not None and tuple(counts) == (0, 0)
    finally:
        await conn2.close()


async def test_log_copy_only_fills_an_empty_log(tmp_path: Path, pg_url: str) -> None:
    path = tmp_path / "small.db"
    source = open_log(str(path))
    await source.open()
    await source.create_run("ticker", {})
    await source.close()
    assert steplog("log", "copy", "--from", str(path), "--to", pg_url).returncode == 0
    twice = steplog("log", "copy", "--from", str(path), "--to", pg_url)
    assert twice.returncode != 0 and "already holds 1 runs and 1 events" in twice.stderr
    missing = steplog("log", "copy", "--from", str(tmp_path / "nope.db"), "--to", pg_url)
    assert missing.returncode != 0 and "no SQLite log" in missing.stderr
