"""The archiver's own runs (`steplog.archive`) are not the users' runs: `GET /runs` leaves
them out unless asked, counts too, and none is offered (or accepted) for a Re-run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.server.cli import steplog, user_env
from tests.support.api import client, start_run, wait_for_status
from tests.support.launcher import ServerProcess


def archive_now(server: ServerProcess, tmp_path: Path) -> None:
    env = user_env(tmp_path / "config", STEPLOG_DB=str(server.db))
    done = steplog("log", "archive", "--keep-days", "0", "--to", str(tmp_path / "a"), env=env)
    assert done.returncode == 0, done.stderr


def listed(server: ServerProcess, **query: Any) -> dict[str, Any]:
    with client(server) as http:
        response = http.get("/runs", params=query)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_archivers_runs_are_left_out_unless_asked(
    server: ServerProcess, tmp_path: Path
) -> None:
    run = start_run(server, count=1, interval_ms=0)
    wait_for_status(server, run["run_id"], "succeeded")
    archive_now(server, tmp_path)

    users = listed(server)
    assert [r["id"] for r in users["runs"]] == [run["run_id"]]
    assert users["counts"] == {"succeeded": 1}
    assert users["runs"][0]["rerunnable"] is True and users["runs"][0]["internal"] is False
    assert [r["id"] for r in listed(server, limit=1)["runs"]] == [run["run_id"]]

    [own] = listed(server, function="steplog.archive")["runs"]
    assert own["status"] == "succeeded"
    assert own["internal"] is True and own["rerunnable"] is False
    everything = listed(server, include="internal")
    assert {r["id"] for r in everything["runs"]} == {run["run_id"], own["id"]}
    assert everything["counts"] == {"succeeded": 2}

    with client(server) as http:
        refused = http.post(f"/runs/{own['id']}/rerun")
        bad = http.get("/runs", params={"include": "everything"})
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "steplog.archive" in refused.json()["detail"]
    assert bad.status_code == 400 and "include" in bad.json()["detail"]


def test_the_cli_lists_no_archiver_run(server: ServerProcess, tmp_path: Path) -> None:
    run = start_run(server, count=1, interval_ms=0)
    wait_for_status(server, run["run_id"], "succeeded")
    archive_now(server, tmp_path)
    env = user_env(tmp_path / "config", STEPLOG_API_KEY=server.api_key, STEPLOG_URL=server.url)
    done = steplog("runs", env=env)
    assert done.returncode == 0, done.stderr
    assert "steplog.archive" not in done.stdout and run["run_id"] in done.stdout
