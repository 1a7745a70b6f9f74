"""PostgreSQL roles and archiving: `steplog migrate --app-role/--archiver-role`, for real.

Two login roles are created for the test (unique names, dropped after): the app
role must not be able to delete a single event, and `steplog log archive` under
it fails cleanly with nothing removed; the archiver role archives, but even it
cannot delete a row that no recorded segment covers.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from storage import NewEvent, open_log
from storage.archive.audit import verify_with_archive
from tests.support.launcher import ROOT

LATER = datetime.fromtimestamp(time.time() + 3600, UTC).isoformat()
"""A cutoff after every run of the test has ended."""


def steplog(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))


@pytest.fixture
async def roles(pg_url: str) -> AsyncIterator[tuple[str, str]]:
    """(app role, archiver role): fresh login roles, dropped with what they own after."""
    tag = secrets.token_hex(4)
    names = (f"steplog_app_{tag}", f"steplog_archiver_{tag}")
    admin = await asyncpg.connect(pg_url)
    try:
        for name in names:
            await admin.execute(f"CREATE ROLE {name} LOGIN")
        yield names
    finally:
        for name in names:
            await admin.execute(f"DROP OWNED BY {name}")
            await admin.execute(f"DROP ROLE {name}")
        await admin.close()


async def fill(url: str) -> tuple[int, str]:
    """Five finished runs, then one still running: (head, the running run's id)."""
    log = open_log(url)
    await log.open()
    try:
        for i in range(5):
            run, _ = await log.create_run("f", {"i": i})
            claimed = await log.claim_run("w", 30, ["f"])
            assert claimed is not None
            await log.append(NewEvent(run.id, "log", claimed.attempt, message=f"{i}"))
            await log.append(NewEvent(run.id, "run.succeeded", claimed.attempt, data={}))
        going, _ = await log.create_run("f", {"going": True})
        claimed = await log.claim_run("w", 300, ["f"])
        assert claimed is not None and claimed.id == going.id
        await log.append(NewEvent(going.id, "log", claimed.attempt, message="still going"))
        return await log.head(), going.id
    finally:
        await log.close()


async def test_app_role_cannot_archive_and_archiver_deletes_only_archived_rows(
    pg_url: str, roles: tuple[str, str], tmp_path: Path
) -> None:
    app, archiver = roles
    migrated = steplog("migrate", "--db", pg_url, "--app-role", app, "--archiver-role", archiver)
    assert migrated.returncode == 0, migrated.stderr
    assert f"granted {app}" in migrated.stdout and f"granted {archiver}" in migrated.stdout
    head, going = await fill(pg_url)

    # The app role cannot delete any event, not even through the archiver's statement.
    conn = await asyncpg.connect(as_role(pg_url, app))
    try:
        for statement in ("DELETE FROM events", "DELETE FROM events WHERE pos = 1"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await conn.execute(statement)
        assert await conn.fetchval("SELECT count(*) FROM events") == head
    finally:
        await conn.close()

    # `steplog log archive` under the app role: a clear error, exit 1, nothing removed.
    refused = steplog(
        "log", "archive", "--db", as_role(pg_url, app), "--before", LATER,
        "--to", str(tmp_path / "archive"),
    )  # fmt: skip
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    assert f"role {app} may not archive" in refused.stderr, refused.stderr
    assert f"--archiver-role {app}" in refused.stderr
    admin = await asyncpg.connect(pg_url)
    try:
        assert await admin.fetchval("SELECT count(*) FROM events") == head
        assert await admin.fetchval("SELECT count(*) FROM archive_segments") == 0
    finally:
        await admin.close()

    # The archiver role archives the five finished runs (the running one stops the prefix).
    done = steplog(
        "log", "archive", "--db", as_role(pg_url, archiver), "--before", LATER,
        "--to", str(tmp_path / "archive"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "archived 20 events of 5 runs" in done.stdout, done.stdout
    assert f"run {going} is running" in done.stdout
    report = await asyncio.to_thread(verify_with_archive, pg_url, tmp_path / "archive", None)
    assert report.ok, report.lines()

    # Even the archiver cannot delete a row no recorded segment covers.
    conn = await asyncpg.connect(as_role(pg_url, archiver))
    try:
        prefix = await conn.fetchval("SELECT max(last_pos) FROM archive_segments")
        assert prefix == 20
        live = await conn.fetchval("SELECT count(*) FROM events")
        for statement in (
            "DELETE FROM events",
            f"DELETE FROM events WHERE pos = {prefix + 1}",
            f"DELETE FROM events WHERE run_id = '{going}'",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(statement)
        for statement in ("UPDATE events SET message = 'forged'", "TRUNCATE events"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM archive_segments")
        assert await conn.fetchval("SELECT count(*) FROM events") == live
    finally:
        await conn.close()
