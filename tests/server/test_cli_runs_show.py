"""`steplog runs show` as a new user meets it: the view_url points at the server
`steplog serve` recorded, an archived run still gets one, an unknown run is exit 4."""

from __future__ import annotations

import json
from pathlib import Path

from stream.cli import errors
from tests.server.cli import error_lines, steplog, user_env
from tests.support.api import start_run, wait_for_status
from tests.support.launcher import ServerProcess


def recorded_by_serve(home: Path, server: ServerProcess) -> None:
    """The per-user file as `steplog serve` leaves it (on whatever port it runs)."""
    folder = home / "steplog"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({
        "written_by": "steplog serve", "url": server.url,
        "api_key_file": str(server.db.parent / "api-key"),
    }))  # fmt: skip


def view_urls(text: str) -> list[str]:
    return [line.split()[1] for line in text.splitlines() if line.startswith("view_url: ")]


def test_the_view_url_points_at_the_server_serve_recorded(
    server: ServerProcess, tmp_path: Path
) -> None:
    run = start_run(server, count=1, interval_ms=0)
    wait_for_status(server, run["run_id"], "succeeded")
    home = tmp_path / "config"
    recorded_by_serve(home, server)
    shown = steplog("runs", "show", run["run_id"], "--db", str(server.db), env=user_env(home))
    assert shown.returncode == 0, shown.stderr
    [url] = view_urls(shown.stdout)
    assert url.startswith(f"{server.url}/runs/{run['run_id']}?token=")
    as_json = steplog(
        "runs", "show", run["run_id"], "--db", str(server.db), "--json", env=user_env(home)
    )
    assert json.loads(as_json.stdout)["view_url"].startswith(server.url + "/")


def test_an_archived_run_prints_the_view_url_that_replays_it(
    server: ServerProcess, tmp_path: Path
) -> None:
    run = start_run(server, count=1, interval_ms=0)
    wait_for_status(server, run["run_id"], "succeeded")
    env = user_env(tmp_path / "config", STEPLOG_DB=str(server.db), STEPLOG_URL=server.url)
    archived = steplog("log", "archive", "--keep-days", "0", "--to", str(tmp_path / "a"), env=env)
    assert archived.returncode == 0, archived.stderr
    shown = steplog("runs", "show", run["run_id"], env=env)
    assert shown.returncode == 0, shown.stderr
    assert "the view_url replays them" in shown.stdout
    [url] = view_urls(shown.stdout)
    assert url.startswith(f"{server.url}/runs/{run['run_id']}?token=")


def test_an_unknown_run_is_exit_4_in_one_line(server: ServerProcess, tmp_path: Path) -> None:
    env = user_env(tmp_path / "config", STEPLOG_DB=str(server.db))
    shown = steplog("runs", "show", "01nope", env=env)
    assert shown.returncode == errors.NOT_FOUND
    [line] = error_lines(shown)
    assert line.startswith("error: ") and "01nope" in line
