"""`steplog log copy` and `steplog log archive` as a user runs them on an archived log:
one line naming the problem, an exit code, nothing changed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from storage import open_log
from storage.archive import archive, store_for
from tests.server.cli import error_lines, steplog, user_env
from tests.sqlite.test_archive import FUTURE, finished_runs


async def archived_log(path: Path, directory: Path) -> int:
    log = open_log(str(path))
    await log.open()
    try:
        await finished_runs(log, 3)
        result = await archive(store_for(log), directory, FUTURE)
    finally:
        await log.close()
    return result.segments[-1].last_pos


def test_copying_an_archived_log_is_refused_in_one_line(tmp_path: Path) -> None:
    source = tmp_path / "log.db"
    last = asyncio.run(archived_log(source, tmp_path / "archive"))
    env = user_env(tmp_path / "config")
    target = tmp_path / "copy.db"
    refused = steplog("log", "copy", "--from", str(source), "--to", str(target), env=env)
    assert refused.returncode == 1
    [line] = error_lines(refused)
    assert f"positions 1..{last} are archived" in line and "nothing was copied" in line
    assert "chain" not in line.lower()
    assert not target.exists()
    # The source is as it was: it still verifies with its archive.
    checked = steplog(
        "audit", "verify", "--db", str(source), "--archive", str(tmp_path / "archive"), env=env
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_archive_vacuum_on_postgresql_is_a_usage_error(tmp_path: Path) -> None:
    refused = steplog(
        "log", "archive", "--db", "postgres://nobody@127.0.0.1:1/none", "--keep-days", "1",
        "--vacuum", env=user_env(tmp_path / "config"),
    )  # fmt: skip
    assert refused.returncode == 2
    assert "--vacuum applies to SQLite" in refused.stderr
