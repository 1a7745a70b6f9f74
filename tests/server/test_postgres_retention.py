"""Retention in `steplog serve` on PostgreSQL when the server runs as the app role.

The app role may not delete events, so retention archives through
`STEPLOG_ARCHIVE_DB` (the archiver role's URL). Without it, the server says so in
one line at start, and not again every round.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from storage import NewEvent, open_log
from storage.archive import store_for
from stream.retention import Retention
from stream.settings import Settings
from tests.conftest import ServerFactory
from tests.server.test_postgres_archive_roles import as_role, roles, steplog  # noqa: F401
from tests.support.api import get_run, start_run, wait_for_status
from tests.support.wait import wait_until


async def test_retention_under_the_app_role_says_once_what_to_set(
    pg_url: str,
    roles: tuple[str, str],  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, archiver = roles
    migrated = steplog("migrate", "--db", pg_url, "--app-role", app, "--archiver-role", archiver)
    assert migrated.returncode == 0, migrated.stderr
    events = open_log(as_role(pg_url, app))
    await events.open()
    try:
        run, _ = await events.create_run("f", {})
        claimed = await events.claim_run("w", 30, ["f"])
        assert claimed is not None
        await events.append(NewEvent(run.id, "run.succeeded", claimed.attempt, data={}))
        settings = Settings(db=as_role(pg_url, app), retention_days=0, archive_dir=str(tmp_path))
        retention = Retention(events, settings)
        with caplog.at_level(logging.INFO, logger="steplog.retention"):
            for _ in range(3):  # three rounds (three hours): one line
                assert await retention.round() is None
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, errors
        assert f"role {app} may not archive" in errors[0] and "STEPLOG_ARCHIVE_DB" in errors[0]
        assert await store_for(events).run_segment(run.id) is None

        # The operator sets STEPLOG_ARCHIVE_DB: the next round archives, and says so.
        caplog.clear()
        retention.archive_db = as_role(pg_url, archiver)
        with caplog.at_level(logging.INFO, logger="steplog.retention"):
            result = await retention.round()
        assert result is not None and result.runs == 1
        said = [r.getMessage() for r in caplog.records]
        assert "retention: archiving works again" in said
        assert (await store_for(events).run_segment(run.id)) is not None
    finally:
        await events.close()


def test_serve_as_the_app_role_archives_through_steplog_archive_db(
    pg_url: str,
    roles: tuple[str, str],  # noqa: F811
    server_factory: ServerFactory,
    tmp_path: Path,
) -> None:
    app, archiver = roles
    migrated = steplog("migrate", "--db", pg_url, "--app-role", app, "--archiver-role", archiver)
    assert migrated.returncode == 0, migrated.stderr
    common = {"ping_interval": 1, "poll_interval": 0.2, "archive_dir": str(tmp_path / "arch")}
    first = server_factory(tmp_path / "a", db=as_role(pg_url, app), retention_days=0, **common)
    run_id = start_run(first, "ticker", count=2, interval_ms=0)["run_id"]
    wait_for_status(first, run_id, "succeeded")

    def said() -> list[str]:
        text = first.log_path.read_text(errors="replace")
        return [line for line in text.splitlines() if "retention: cannot archive" in line]

    lines = wait_until(said, 20, what="the retention line")
    assert len(lines) == 1 and "STEPLOG_ARCHIVE_DB" in lines[0], lines
    assert "Traceback" not in first.log_path.read_text(errors="replace")
    first.stop()

    second = server_factory(
        tmp_path / "b", db=as_role(pg_url, app), retention_days=0,
        archive_db=as_role(pg_url, archiver), **common,
    )  # fmt: skip
    archived = wait_until(
        lambda: get_run(second, run_id).get("archived"), 20, what="the run to be archived"
    )
    assert Path(archived["directory"]) == (tmp_path / "arch").resolve()
    log_text = second.log_path.read_text(errors="replace")
    assert "cannot archive" not in log_text and "Traceback" not in log_text
