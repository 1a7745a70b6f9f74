"""A full disk is an outage steplog recovers from, on a real (tiny) filesystem.

The server's database lives on an 8 MiB tmpfs mounted by the test (root only;
skipped otherwise, failed under `CI=true` when root cannot mount). A filler file
takes the free space: first below `STEPLOG_MIN_FREE_MB` (new runs are refused,
running ones go on), then all of it (every write gets a `503 storage_full`, the
running ticker is handed back, not failed). Deleting the filler must give back a
writable log at once, without a restart, and lose nothing acknowledged; a restart
on a nearly full volume must start and serve reads.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import IN_CI, require
from tests.support.api import (
    assert_problem,
    client,
    get_run,
    json_bytes,
    post_webhook,
    wait_for_status,
)
from tests.support.launcher import ROOT, ServerProcess, make_server
from tests.support.wait import wait_until

VOLUME = "8m"
MIN_FREE_MB = 2
CHUNK = 64 * 1024


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs, unmounted at teardown whatever happened."""
    mountpoint = tmp_path / "volume"
    mountpoint.mkdir()
    can_mount = os.geteuid() == 0
    why = "the test must run as root to mount a tmpfs"
    if can_mount:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={VOLUME}", "tmpfs", str(mountpoint)],
            capture_output=True,
            text=True,
        )
        can_mount = done.returncode == 0
        why = f"mount -t tmpfs failed: {done.stderr.strip() or done.returncode}"
        if not can_mount and IN_CI:
            pytest.fail(f"running as root under CI=true, but {why}")
    require("a small tmpfs", can_mount, why)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def fill(filler: Path, leave: int) -> None:
    """Grow `filler` until at most `leave` bytes are free on its filesystem (or it is full)."""
    with filler.open("ab") as handle:
        while True:
            room = free_bytes(filler.parent) - leave
            if room <= 0:
                return
            try:
                handle.write(b"\0" * min(CHUNK, room))
                handle.flush()
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    return
                raise


def fill_up(filler: Path) -> None:
    """Take every last byte, then again a moment later (SQLite may free some meanwhile)."""
    for _ in range(3):
        fill(filler, 0)
        with contextlib.suppress(OSError), filler.open("ab", buffering=0) as handle:
            for _ in range(64):
                handle.write(b"\0" * 4096)


def start_server(volume: Path, log_dir: Path, **settings: Any) -> ServerProcess:
    """A one-process server whose log is on `volume`, its output in `log_dir` (off the volume)."""
    return make_server(volume, log_path=log_dir / "server.log", **settings).start()


def post_run(server: ServerProcess, **params: Any) -> httpx.Response:
    with client(server) as http:
        return http.post("/runs", json={"function": "ticker", "params": params})


def assert_storage_problem(response: httpx.Response, reasons: set[str]) -> dict[str, Any]:
    body = assert_problem(response, 503)
    assert body.get("reason") in reasons, body
    assert response.headers.get("Retry-After", "").isdigit(), response.headers
    return body


def readyz(server: ServerProcess) -> httpx.Response:
    with client(server) as http:
        return http.get("/readyz")


def events_of(server: ServerProcess, run_id: str) -> list[dict[str, Any]]:
    with client(server) as http:
        response = http.get(f"/runs/{run_id}/log", params={"limit": 5000})
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def test_full_disk_is_an_outage_steplog_recovers_from(volume: Path, tmp_path: Path) -> None:
    server = start_server(
        volume,
        tmp_path,
        min_free_mb=MIN_FREE_MB,
        workers=3,
        lease_seconds=3,
        poll_interval=0.2,
    )
    filler = volume / "filler"
    accepted: set[str] = set()
    try:
        # Runs in progress before the disk fills: a long ticker, and one to cancel later.
        ticker = post_run(server, count=400, interval_ms=50)
        assert ticker.status_code == 202, ticker.text
        ticker_id = ticker.json()["run_id"]
        other = post_run(server, count=100_000, interval_ms=200)
        assert other.status_code == 202, other.text
        other_id = other.json()["run_id"]
        accepted |= {ticker_id, other_id}
        wait_for_status(server, ticker_id, "running")
        wait_until(lambda: get_run(server, ticker_id)["last_seq"] >= 10, 20, what="ticks")

        # Below the floor: new runs are refused, the running ticker still appends.
        fill(filler, MIN_FREE_MB * 2**20 // 2)
        refused = wait_until(
            lambda: (r := post_run(server, count=1)).status_code == 503 and r,
            15,
            what="POST /runs refused below STEPLOG_MIN_FREE_MB",
        )
        assert_storage_problem(refused, {"storage_low", "storage_full"})
        seq = get_run(server, ticker_id)["last_seq"]
        wait_until(
            lambda: get_run(server, ticker_id)["last_seq"] >= seq + 10,
            20,
            what="the running ticker appending below the floor",
        )

        # Full: every write is a 503 storage_full with Retry-After, never a 500.
        fill_up(filler)

        def found_full() -> bool:
            fill_up(filler)
            ready = readyz(server)
            return ready.status_code == 503 and "full" in ready.json()["checks"]["storage"]

        wait_until(found_full, 30, interval=0.2, what="/readyz naming the full storage")
        # New runs: storage_full (or storage_low: refused before trying); other writes:
        # storage_full. Always with Retry-After, never a 500.
        fill_up(filler)
        hook = post_webhook(server, "ticker", json_bytes({"count": 1}))
        assert_storage_problem(hook, {"storage_full", "storage_low"})
        fill_up(filler)
        assert_storage_problem(post_run(server, count=1), {"storage_full", "storage_low"})
        fill_up(filler)
        with client(server) as http:
            cancel = http.post(f"/runs/{other_id}/cancel")
        assert_storage_problem(cancel, {"storage_full"})
        for _ in range(5):  # repeated refusals stay clean
            fill_up(filler)
            assert_storage_problem(
                post_webhook(server, "ticker", json_bytes({"count": 1})),
                {"storage_full", "storage_low"},
            )
        fill_up(filler)
        ready = readyz(server)
        body = assert_problem(ready, 503)
        assert "storage" in body["checks"], body
        assert "full" in body["checks"]["storage"], body
        assert body["checks"]["workers"] == "3 running", body
        # Reads still work, and the ticker is not failed for the storage's fault.
        run = get_run(server, ticker_id)
        assert run["status"] in {"running", "queued"}, run
        assert run["status"] != "failed"
        # Stay full past the lease (3 s): an outage must not burn attempts.
        seq = run["last_seq"]
        with pytest.raises(AssertionError):
            wait_until(
                lambda: get_run(server, ticker_id)["status"] == "failed",
                8,
                what="the ticker failing (it must not)",
            )
        fill_up(filler)
        assert get_run(server, ticker_id)["last_seq"] <= seq + 1
        assert readyz(server).json()["checks"]["workers"] == "3 running"

        # Space comes back: writes work at once, without a restart.
        filler.unlink()
        fresh = wait_until(
            lambda: (r := post_run(server, count=1, interval_ms=0)).status_code == 202 and r,
            10,
            what="POST /runs accepted once space is back",
        )
        accepted.add(fresh.json()["run_id"])
        hooked = post_webhook(server, "ticker", json_bytes({"count": 1, "interval_ms": 0}))
        assert hooked.status_code == 202, hooked.text
        accepted.add(hooked.json()["run_id"])
        wait_until(lambda: readyz(server).status_code == 200, 15, what="/readyz 200 again")

        done = wait_for_status(server, ticker_id, "succeeded", timeout=90)
        assert done["status"] == "succeeded"
        retrying = [e for e in events_of(server, ticker_id) if e["type"] == "run.retrying"]
        assert retrying, "the handed-back run says so in its stream"
        assert any("storage" in (e["message"] or "") for e in retrying), [
            e["message"] for e in retrying
        ]
        with client(server) as http:
            assert http.post(f"/runs/{other_id}/cancel").status_code == 200
        assert readyz(server).json()["checks"]["workers"] == "3 running"

        # Nothing acknowledged is lost.
        for run_id in accepted:
            get_run(server, run_id)
    finally:
        server.stop()
        with contextlib.suppress(FileNotFoundError):
            filler.unlink()

    log_text = server.log_path.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log_text, log_text[-5000:]
    assert "Internal error" not in log_text
    audit = subprocess.run(
        [sys.executable, "-m", "stream", "audit", "verify", "--db", str(server.db)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr

    # A restart on a nearly full volume starts, checkpoints and serves reads.
    fill(filler, 256 * 1024)
    restarted = start_server(volume, tmp_path, min_free_mb=MIN_FREE_MB, workers=1)
    try:
        assert get_run(restarted, ticker_id)["status"] == "succeeded"
        ready = readyz(restarted)
        assert ready.status_code == 503
        assert "storage" in ready.json()["checks"], ready.text
        assert_storage_problem(post_run(restarted, count=1), {"storage_low", "storage_full"})
    finally:
        restarted.stop()
        with contextlib.suppress(FileNotFoundError):
            filler.unlink()
