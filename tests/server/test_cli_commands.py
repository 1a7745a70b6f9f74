"""`steplog trigger`, `tail`, `runs` and `login` as a new user meets them, against a real server."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest

from stream.cli import errors
from tests.conftest import ServerFactory
from tests.server.cli import error_lines, steplog, user_env
from tests.support.api import client, start_run, wait_for_status
from tests.support.launcher import ServerProcess


def test_the_key_is_found_beside_steplog_db_from_any_directory(
    server: ServerProcess, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = user_env(tmp_path / "config", STEPLOG_DB=str(server.db), STEPLOG_URL=server.url)
    done = steplog("runs", env=env, cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("no runs yet")


def test_serve_records_itself_so_the_cli_works_from_anywhere(
    server_factory: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.delenv("STEPLOG_API_KEY", raising=False)
    server = server_factory(ping_interval=1)
    config = home / "steplog" / "config.json"
    recorded = json.loads(config.read_text())
    assert recorded["url"] == server.url
    assert recorded["api_key_file"] == str((server.db.parent / "api-key").resolve())
    assert server.api_key not in config.read_text()  # the path, never the key
    assert stat.S_IMODE(config.stat().st_mode) == 0o600

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    start_run(server, count=2, interval_ms=0)
    done = steplog("runs", env=user_env(home), cwd=elsewhere)  # no URL, no key, no db given
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "FUNCTION", "ATTEMPT", "EVENTS", "CREATED"]
    assert " ticker " in row


def test_login_keeps_a_server_for_this_user(server: ServerProcess, tmp_path: Path) -> None:
    home = tmp_path / "config"
    key_file = tmp_path / "key"
    key_file.write_text("slk_wrong\n")
    refused = steplog("login", "--url", server.url, "--api-key-file", str(key_file),
                      env=user_env(home))  # fmt: skip
    assert refused.returncode == errors.NO_KEY
    assert not (home / "steplog" / "config.json").exists()

    key_file.write_text(server.api_key + "\n")
    done = steplog("login", "--url", server.url + "/", "--api-key-file", str(key_file),
                   env=user_env(home))  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = home / "steplog" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    listed = steplog("runs", env=user_env(home), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    # A `serve` starting later on this machine leaves the chosen server alone.
    from stream.cli.config import WRITTEN_BY_SERVE

    assert json.loads(config.read_text())["written_by"] != WRITTEN_BY_SERVE


def test_trigger_follow_prints_clickable_links_then_the_result(
    server: ServerProcess, tmp_path: Path
) -> None:
    env = user_env(tmp_path / "config", STEPLOG_API_KEY=server.api_key, STEPLOG_URL=server.url)
    done = steplog("trigger", "ticker", "-p", "count=3", "-p", "interval_ms=0", "--follow",
                   env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    match = re.fullmatch(r"run (\w+) \(ticker\) queued", lines[0])
    assert match is not None, lines[0]
    run_id = match.group(1)
    assert (
        lines[1].strip()
        == f"view:   {server.url}/runs/{run_id}?token=" + lines[1].split("?token=")[1]
    )
    assert lines[2].strip().startswith(f"stream: {server.url}/runs/{run_id}/events?token=")
    assert any("run.succeeded" in line for line in lines)
    assert lines[-4:] == ["result:", "{", '  "ticks": 3', "}"]
    with client(server, auth=False) as http:  # the printed link opens the run
        opened = http.get(lines[1].split()[-1], headers={"Accept": "application/json"})
    assert opened.status_code == 200

    as_json = steplog("trigger", "ticker", "-p", "count=1", "--json", env=env)
    body = json.loads(as_json.stdout)
    assert body["view_url"].startswith(f"{server.url}/runs/{body['run_id']}?token=")
    with client(server) as http:  # the runs list says where the run came from
        assert http.get(f"/runs/{body['run_id']}").json()["trigger"] == "cli"


def test_tail_prints_how_the_run_ended_with_its_exit_code(
    server: ServerProcess, tmp_path: Path
) -> None:
    env = user_env(tmp_path / "config", STEPLOG_API_KEY=server.api_key, STEPLOG_URL=server.url)
    failed = start_run(server, count=5, interval_ms=0, fail_at=2)
    done = steplog("tail", failed["run_id"], env=env)
    assert done.returncode == errors.FAILED
    assert done.stdout.splitlines()[-1].startswith("failed: ")

    running = start_run(server, count=500, interval_ms=50)
    wait_for_status(server, running["run_id"], "running")
    with client(server) as http:
        assert http.post(f"/runs/{running['run_id']}/cancel").status_code == 200
    wait_for_status(server, running["run_id"], "cancelled")
    done = steplog("tail", running["run_id"], env=env)
    assert done.returncode == errors.CANCELLED
    assert done.stdout.splitlines()[-1].startswith("cancelled")

    # Resuming at the end of a finished run: nothing to print but how it ended.
    last = len(steplog("tail", failed["run_id"], "--json", env=env).stdout.splitlines())
    again = steplog("tail", failed["run_id"], "--from", str(last), env=env)
    assert again.returncode == errors.FAILED
    assert error_lines(again) == []


def test_runs_filters_and_says_when_nothing_matches(server: ServerProcess, tmp_path: Path) -> None:
    env = user_env(tmp_path / "config", STEPLOG_API_KEY=server.api_key, STEPLOG_URL=server.url)
    done = steplog("runs", "--status", "failed", env=env)
    assert done.returncode == 0 and done.stdout.strip() == "no runs match"
    bad = steplog("runs", "--status", "bogus", env=env)
    assert bad.returncode == errors.FAILED
    [line] = error_lines(bad)
    assert "bogus" in line
