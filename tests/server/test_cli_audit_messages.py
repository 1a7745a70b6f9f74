"""What `steplog audit verify --anchor` and `runs show` tell a person, in words."""

from __future__ import annotations

from pathlib import Path

from tests.server.cli import error_lines, steplog, user_env
from tests.support.api import start_run, wait_for_status
from tests.support.launcher import ServerProcess


def test_verify_says_the_anchor_matched_and_a_missing_file_is_named(
    server: ServerProcess, tmp_path: Path
) -> None:
    run = start_run(server, count=1, interval_ms=0)
    wait_for_status(server, run["run_id"], "succeeded")
    env = user_env(tmp_path / "config", STEPLOG_DB=str(server.db))
    line = steplog("audit", "anchor", env=env).stdout.strip()
    matched = steplog("audit", "verify", "--anchor", line, env=env)
    assert matched.returncode == 0, matched.stderr
    pos, digest = line.split()[1].removeprefix("pos="), line.split()[2].removeprefix("hash=")
    assert matched.stdout.splitlines()[-1] == f"anchor matched: pos {pos} still has hash {digest}"

    missing = tmp_path / "no-such-anchor.txt"
    done = steplog("audit", "verify", "--anchor", str(missing), env=env)
    assert done.returncode == 2
    assert error_lines(done) == [
        f"error: --anchor: file not found: {missing} (give the anchor line, or its file)"
    ]


def test_runs_show_counts_in_words_and_prints_the_result_pretty(
    server: ServerProcess, tmp_path: Path
) -> None:
    run = start_run(server, count=1, interval_ms=0)
    wait_for_status(server, run["run_id"], "succeeded")
    env = user_env(tmp_path / "config", STEPLOG_DB=str(server.db), STEPLOG_URL=server.url)
    shown = steplog("runs", "show", run["run_id"], env=env)
    assert shown.returncode == 0, shown.stderr
    assert "(1 events)" not in shown.stdout
    assert "(1 event)" in shown.stdout  # the tick step: one progress event
    assert 'result:\n{\n  "ticks": 1\n}\n' in shown.stdout


def test_an_archived_anchor_fails_in_one_line_not_two(
    server: ServerProcess, tmp_path: Path
) -> None:
    run = start_run(server, count=1, interval_ms=0)
    wait_for_status(server, run["run_id"], "succeeded")
    env = user_env(tmp_path / "config", STEPLOG_DB=str(server.db))
    line = steplog("audit", "anchor", env=env).stdout.strip()
    archived = steplog("log", "archive", "--keep-days", "0", "--to", str(tmp_path / "a"), env=env)
    assert archived.returncode == 0, archived.stderr
    done = steplog("audit", "verify", "--anchor", line, env=env)
    assert done.returncode == 1
    said = [text for text in done.stdout.splitlines() if "is archived (in segment-" in text]
    assert len(said) == 1, done.stdout
    assert said[0].startswith("FAIL pos ")
