"""Archived runs over HTTP, against real servers: `GET /runs/{id}` says `archived`, the
stream replays the run from its segment and ends, and a segment that is gone is a
clear 410, not a 500 or an empty stream. Retention in `serve` archives at start."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ServerFactory
from tests.support.api import assert_problem, client, get_run, start_run, wait_for_status
from tests.support.wait import wait_until


def archive_now(db: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "stream", "log", "archive", "--db", str(db), "--keep-days", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def test_an_archived_run_is_viewable_and_replays_from_its_segment(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(tmp_path / "s", ping_interval=1, poll_interval=0.2)
    run_id = start_run(server, "ticker", count=3, interval_ms=0)["run_id"]
    wait_for_status(server, run_id, "succeeded")
    with client(server) as http:
        live_log = http.get(f"/runs/{run_id}/log").json()["events"]
        live_stream = http.get(f"/runs/{run_id}/events").text

    out = archive_now(server.db)  # while the server runs: one more writer of the same log
    assert "archived" in out and "segment-" in out

    run = get_run(server, run_id)
    assert run["status"] == "succeeded"
    assert run["archived"]["segment"].startswith("segment-000000000001-")
    with client(server) as http:
        assert http.get(f"/runs/{run_id}/log").json()["events"] == live_log
        replayed = http.get(f"/runs/{run_id}/events")
    assert replayed.status_code == 200
    assert replayed.text == live_stream  # the same frames, ending after the terminal event

    shown = subprocess.run(
        [sys.executable, "-m", "stream", "runs", "show", run_id, "--db", str(server.db)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (
        shown.returncode == 0
        and f"archived: its events are in {run['archived']['segment']}" in shown.stdout
    )

    # The segments moved away: a clear 410 naming where they went.
    shutil.move(tmp_path / "s" / "archive", tmp_path / "moved")
    with client(server) as http:
        gone = assert_problem(http.get(f"/runs/{run_id}/events"), 410)
    assert run["archived"]["segment"] in gone["detail"]

    # New runs keep working on the archived log.
    again = start_run(server, "ticker", count=1, interval_ms=0)["run_id"]
    wait_for_status(server, again, "succeeded")


def test_retention_in_serve_archives_what_is_old_enough(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    first = server_factory(tmp_path / "s", ping_interval=1, poll_interval=0.2)
    run_id = start_run(first, "ticker", count=2, interval_ms=0)["run_id"]
    wait_for_status(first, run_id, "succeeded")
    first.stop()
    second = server_factory(tmp_path / "s", ping_interval=1, poll_interval=0.2, retention_days=0)
    archived = wait_until(
        lambda: get_run(second, run_id).get("archived"), 20, what="the run to be archived"
    )
    assert Path(archived["directory"]) == (tmp_path / "s" / "archive").resolve()
