"""Secrets in params at rest: who holds the key, and what happens without it.

Real processes throughout: `steplog serve` queues the runs, a separate `steplog
worker` (or a restarted server) with another key list executes them, and the
runs table is read straight from SQLite or PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.fernet import Fernet

from functions.sealing import new_key
from storage.jsonenc import canonical
from tests.conftest import ServerFactory
from tests.support.api import (
    assert_nothing_written,
    assert_problem,
    client,
    get_run,
    run_ids,
    start_run,
    wait_for_status,
)
from tests.support.launcher import ROOT, ServerProcess, free_port, stop_processes

LOGIN = {"username": "zoe.reader", "password": "correct-horse-battery-staple"}
UNREADABLE = (
    "UnreadableCredentials: cannot decrypt the run's credentials: STEPLOG_SECRET_KEY differs"
    " from the one they were stored with"
)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    stop_processes(started)


def start_worker(
    processes: list[subprocess.Popen[bytes]], server: ServerProcess, log: Path, **env: str
) -> subprocess.Popen[bytes]:
    worker = subprocess.Popen(
        [sys.executable, "-m", "stream", "worker", "--db", server.database, "--concurrency", "1"],
        cwd=ROOT,
        env={**server.env, "STEPLOG_POLL_INTERVAL": "0.1", **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    processes.append(worker)
    return worker


def stored_params(server: ServerProcess, run_id: str) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{server.db}?mode=ro", uri=True)
    try:
        (text,) = conn.execute("SELECT params FROM runs WHERE id = ?", (run_id,)).fetchone()
    finally:
        conn.close()
    params: dict[str, Any] = json.loads(text)
    return params


def test_a_worker_with_another_key_fails_the_run_clearly_and_keeps_working(
    server_factory: ServerFactory, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    server = server_factory(workers=0, poll_interval=0.1)
    # Never fetched: the run fails before the function is called.
    scrape = start_run(server, "scrape", url="https://example.com/in/zoe", credentials=LOGIN)
    log = tmp_path / "worker.log"
    worker = start_worker(processes, server, log, STEPLOG_SECRET_KEY=new_key())

    run = wait_for_status(server, scrape["run_id"], "failed", timeout=60)
    assert run["error"] == UNREADABLE
    assert run["attempt"] == 1  # permanent: another attempt would fail the same way
    # The worker's one slot is still alive: it runs the next run.
    ticker = start_run(server, "ticker", count=2, interval_ms=0)
    wait_for_status(server, ticker["run_id"], "succeeded", timeout=60)
    assert worker.poll() is None
    said = log.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in said, said
    assert LOGIN["password"] not in said and LOGIN["username"] not in said


def test_a_worker_with_no_key_on_postgresql_fails_the_run_clearly(
    server_factory: ServerFactory,
    processes: list[subprocess.Popen[bytes]],
    pg_url: str,
    tmp_path: Path,
) -> None:
    key = new_key()
    server = server_factory(db=pg_url, workers=0, poll_interval=0.1, secret_key=key)
    scrape = start_run(server, "scrape", url="https://example.com/in/zoe", credentials=LOGIN)
    env = {k: v for k, v in server.env.items() if k != "STEPLOG_SECRET_KEY"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "stream", "worker", "--db", pg_url, "--concurrency", "1"],
        cwd=ROOT,
        env={**env, "STEPLOG_POLL_INTERVAL": "0.1"},
        stdout=(tmp_path / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    processes.append(worker)
    run = wait_for_status(server, scrape["run_id"], "failed", timeout=60)
    assert run["error"] == (
        "UnreadableCredentials: cannot decrypt the run's credentials: STEPLOG_SECRET_KEY is not"
        " set here, and they were stored encrypted"
    )


async def test_postgresql_seals_with_the_given_key_and_refuses_secrets_without_one(
    server_factory: ServerFactory, pg_url: str
) -> None:
    """No key beside a PostgreSQL log (a dump of `meta` would carry it with the secrets):
    without STEPLOG_SECRET_KEY a run holding a secret is refused and nothing is written,
    while runs without one are served as before."""
    keyless = server_factory(db=pg_url, workers=1, poll_interval=0.2)
    before = run_ids(keyless)
    with client(keyless) as http:
        refused = http.post(
            "/runs",
            json={
                "function": "scrape",
                "params": {"url": "https://example.com/in/zoe", "credentials": LOGIN},
            },
        )
    body = assert_problem(refused, 422)
    assert "STEPLOG_SECRET_KEY" in body["detail"]
    assert LOGIN["password"] not in refused.text
    assert_nothing_written(keyless, before)  # and a run without a secret ran as before
    keyless.stop()

    key = new_key()
    keyed = server_factory(db=pg_url, workers=0, secret_key=key)
    run_id = start_run(keyed, "scrape", url="https://example.com/in/zoe", credentials=LOGIN)[
        "run_id"
    ]
    assert get_run(keyed, run_id)["params"]["credentials"] == {
        "username": "**********",
        "password": "**********",
    }
    conn = await asyncpg.connect(pg_url)
    try:
        text = await conn.fetchval("SELECT params::text FROM runs WHERE id = $1", run_id)
        dump = await conn.fetch("SELECT key, value FROM meta")
    finally:
        await conn.close()
    assert LOGIN["password"] not in text and LOGIN["username"] not in text
    sealed = json.loads(text)["credentials"]["password"]["$enc"]
    assert json.loads(Fernet(key.encode()).decrypt(sealed.encode())) == LOGIN["password"]
    assert all(key.encode() not in bytes(row["value"]) for row in dump)  # not in the database


def test_a_rotated_key_list_opens_runs_sealed_before_and_seals_with_the_new_key(
    server_factory: ServerFactory, tmp_path: Path, chromium: str
) -> None:
    """STEPLOG_SECRET_KEY=NEW,OLD: a run queued under OLD still logs in (real Chromium,
    the demo site's login); runs started now are sealed with NEW."""
    directory, port = tmp_path / "srv", free_port()
    settings: dict[str, Any] = {"demo": 1, "chromium": chromium, "poll_interval": 0.2}
    first = server_factory(directory=directory, port=port, workers=0, **settings)
    url = f"http://127.0.0.1:{port}/demo/in/zoe-arnaud"
    queued = start_run(first, "scrape", url=url, credentials=LOGIN, as_of="2026-01-01")
    first.stop()
    old = (directory / "secret-key").read_text().strip()
    new = new_key()

    second = server_factory(directory=directory, port=port, secret_key=f"{new},{old}", **settings)
    run = wait_for_status(second, queued["run_id"], "succeeded", "failed", timeout=120)
    assert run["status"] == "succeeded", run["error"]
    assert run["result"]["profile"]["name"] == "Zo\u00eb Arnaud"  # behind the login

    later = start_run(second, "scrape", url=url, credentials=LOGIN, as_of="2026-01-01")
    sealed = stored_params(second, later["run_id"])["credentials"]["password"]["$enc"]
    assert json.loads(Fernet(new.encode()).decrypt(sealed.encode())) == LOGIN["password"]
    wait_for_status(second, later["run_id"], "succeeded", "failed", timeout=120)


def test_a_keyed_request_holding_a_secret_is_replayed_and_fingerprinted_with_a_key(
    server_factory: ServerFactory,
) -> None:
    """Sealing differs every time, so the idempotency fingerprint is taken before it;
    and over a login it is keyed, so a copy of the database cannot test guesses."""
    server = server_factory(workers=0)
    params = {"url": "https://example.com/in/zoe", "credentials": LOGIN}
    body = {"function": "scrape", "params": params}
    headers = {**server.headers, "Idempotency-Key": "nightly-zoe"}
    with client(server) as http:
        first = http.post("/runs", json=body, headers=headers)
        again = http.post("/runs", json=body, headers=headers)
        other = {**params, "credentials": {**LOGIN, "password": "another guess"}}
        guessed = http.post("/runs", json={**body, "params": other}, headers=headers)
    assert first.status_code == 202, first.text
    assert again.status_code == 200, again.text
    assert again.json()["run_id"] == first.json()["run_id"]
    assert_problem(guessed, 422)
    assert guessed.json()["reason"] == "idempotency_conflict"
    assert run_ids(server) == {first.json()["run_id"]}

    conn = sqlite3.connect(f"file:{server.db}?mode=ro", uri=True)
    try:
        (stored,) = conn.execute("SELECT idempotency_fingerprint FROM runs").fetchone()
    finally:
        conn.close()
    plain = hashlib.sha256(canonical(params).encode()).hexdigest()
    assert stored.startswith("hmac-sha256:") and plain not in stored


def test_the_database_files_are_readable_by_their_owner_only(server_factory: ServerFactory) -> None:
    """The log holds the run-token key and every scraped profile: another local user must
    not be able to read it (and mint tokens), any more than the key files beside it."""
    server = server_factory(workers=1)
    run = start_run(server, "ticker", count=3, interval_ms=0)
    wait_for_status(server, run["run_id"], "succeeded")
    database = Path(server.db)
    files = [database, *(database.with_name(database.name + end) for end in ("-wal", "-shm"))]
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in files if path.exists()}
    assert database.name in modes and len(modes) >= 2, modes
    assert set(modes.values()) == {"0o600"}, modes
