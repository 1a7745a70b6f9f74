"""`steplog log copy` named wrongly, as the README's PostgreSQL section once did: one line."""

from __future__ import annotations

from pathlib import Path

from tests.server.cli import error_lines, steplog, user_env


def test_a_missing_source_is_one_line_naming_the_absolute_path(tmp_path: Path) -> None:
    env = user_env(tmp_path / "config")
    (tmp_path / "data").mkdir()
    done = steplog("log", "copy", "--from", "sqlite:///data/steplog.db",
                   "--to", str(tmp_path / "copy.db"), env=env, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    [line] = error_lines(done)
    assert line.startswith("error: --from: no SQLite log at /data/steplog.db; sqlite:///")
    assert "data/steplog.db" in line and "absolute" in line
    assert not (tmp_path / "copy.db").exists()
