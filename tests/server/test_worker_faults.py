"""A worker slot survives every fault of a run, settles the run, and claims the next.

Each test runs a real `steplog serve` with one worker slot, so "the slot" is the
only one there is: after the fault, that same slot must run the next run, and
`/readyz` must keep reporting it running. Storage faults are real: a SQLite
trigger, created on the server's database file from here, makes the log refuse
one function's writes; the other faults are functions that end badly
(tests/server/fault_functions.py).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.support.api import client, get_run, start_run, wait_for_status
from tests.support.launcher import ROOT, ServerProcess
from tests.support.wait import wait_until

FAULT_MODULE = "tests.server.fault_functions"


@pytest.fixture
def fault_server(server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> ServerProcess:
    """A real server with one worker slot that also knows the fault functions."""
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) if not path else f"{ROOT}{os.pathsep}{path}")
    return server_factory(ping_interval=1, poll_interval=0.2, workers=1, functions=FAULT_MODULE)


# --- what the tests look at -------------------------------------------------------------------


def readiness(server: ServerProcess) -> tuple[int, dict[str, str]]:
    """`/readyz`: its status and its checks (a 503 problem body carries them too)."""
    with client(server, auth=False) as http:
        response = http.get("/readyz")
    checks: dict[str, str] = response.json()["checks"]
    return response.status_code, checks


def assert_slot_running(server: ServerProcess, *, ready: bool = True) -> None:
    """The one worker slot is running (and, with `ready`, `/readyz` answers 200)."""
    status, checks = readiness(server)
    assert checks["workers"] == "1 running", checks
    if ready:
        assert status == 200, checks


def slot_died(server: ServerProcess) -> str | None:
    """Why the server no longer has a running slot, if it does not."""
    if server.process is not None and server.process.poll() is not None:
        return f"the server exited with {server.process.returncode}"
    try:
        _, checks = readiness(server)
    except httpx.TransportError as exc:
        return f"the server does not answer: {exc!r}"
    except ValueError as exc:  # not even a JSON body: the server is wedged
        return f"/readyz did not answer with JSON: {exc}"
    return None if checks["workers"] == "1 running" else f"workers: {checks['workers']}"


def events_of(server: ServerProcess, run_id: str) -> list[dict[str, Any]]:
    """The run's committed events, read from the database file."""
    with closing(sqlite3.connect(f"file:{server.db}?mode=ro", uri=True, timeout=30)) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT seq, type, step, message, data, attempt FROM events"
            " WHERE run_id = ? ORDER BY seq",
            (run_id,),
        ).fetchall()
    return [dict(row) for row in rows]


def server_log(server: ServerProcess) -> str:
    return server.log_path.read_text(encoding="utf-8", errors="replace")


def next_run_succeeds(server: ServerProcess) -> None:
    """The slot takes the next run and runs it to the end."""
    run = start_run(server, "ticker", count=2, interval_ms=0)
    done = wait_for_status(server, run["run_id"], "succeeded", "failed", timeout=30)
    assert done["status"] == "succeeded", done
    assert_slot_running(server)


# --- the injected storage fault ---------------------------------------------------------------


@pytest.fixture
def refuse(fault_server: ServerProcess) -> Iterator[Any]:
    """`refuse(*types)`: make the log refuse these event types for `flaky` runs.

    A real fault: a trigger on the server's own database file aborts the
    transaction that would insert them. Returns a function that drops it again.
    """
    created: list[str] = []

    def install(*types: str) -> Any:
        marks = ", ".join(f"'{t}'" for t in types)
        with closing(sqlite3.connect(fault_server.db, timeout=30, isolation_level=None)) as db:
            db.execute(
                "CREATE TRIGGER refuse_flaky BEFORE INSERT ON events"
                f" WHEN NEW.type IN ({marks})"
                "  AND (SELECT function FROM runs WHERE id = NEW.run_id) = 'flaky'"
                " BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
            )
        created.append("refuse_flaky")

        def drop() -> None:
            with closing(sqlite3.connect(fault_server.db, timeout=30, isolation_level=None)) as db:
                db.execute("DROP TRIGGER IF EXISTS refuse_flaky")

        return drop

    yield install
    if created:
        with closing(sqlite3.connect(fault_server.db, timeout=30, isolation_level=None)) as db:
            db.execute("DROP TRIGGER IF EXISTS refuse_flaky")


def test_a_storage_fault_hands_the_run_back_and_the_slot_goes_on(
    fault_server: ServerProcess, refuse: Any
) -> None:
    drop = refuse("step.progress")
    run_id = start_run(fault_server, "flaky")["run_id"]

    def retrying() -> dict[str, Any] | None:
        found = [e for e in events_of(fault_server, run_id) if e["type"] == "run.retrying"]
        if found:
            return found[0]
        if get_run(fault_server, run_id)["status"] == "failed":
            stored = events_of(fault_server, run_id)
            raise AssertionError(f"the run failed instead of being retried: {stored}")
        return None

    retry = wait_until(retrying, 30, what="the run to be handed back for a retry")
    assert retry["attempt"] == 1
    assert "the event log could not record step.progress" in retry["message"], retry
    assert "injected fault" in retry["message"], retry
    assert_slot_running(fault_server)

    drop()
    done = wait_for_status(fault_server, run_id, "succeeded", "failed", timeout=60)
    assert done["status"] == "succeeded" and done["attempt"] >= 2, done
    assert done["result"] == {"parts": 3}
    next_run_succeeds(fault_server)
    # The failed attempt is logged once, with its run id, by the slot that ran it.
    attempt_lines = [
        line
        for line in server_log(fault_server).splitlines()
        if f"run {run_id} attempt 1: the event log failed" in line
    ]
    assert len(attempt_lines) == 1, attempt_lines


def test_a_slot_that_cannot_settle_a_run_backs_off_and_settles_it_later(
    fault_server: ServerProcess, refuse: Any
) -> None:
    # The log refuses the run's progress, and also both ways of settling it.
    drop = refuse("step.progress", "run.retrying", "run.failed")
    run_id = start_run(fault_server, "flaky")["run_id"]

    def settle_failed_or_slot_died() -> str | None:
        died = slot_died(fault_server)
        if died:
            return died
        line = f"run {run_id} attempt 1: could not settle"
        return "settle failed" if line in server_log(fault_server) else None

    outcome = wait_until(settle_failed_or_slot_died, 30, what="a failed settle to be logged")
    assert outcome == "settle failed", outcome
    # Not settled, not dead: the slot keeps trying, and /readyz counts it running.
    assert get_run(fault_server, run_id)["status"] == "running"
    assert_slot_running(fault_server, ready=False)

    drop()
    done = wait_for_status(fault_server, run_id, "succeeded", "failed", timeout=60)
    assert done["status"] == "succeeded" and done["attempt"] >= 2, done
    retry = next(e for e in events_of(fault_server, run_id) if e["type"] == "run.retrying")
    assert "injected fault" in retry["message"], retry
    next_run_succeeds(fault_server)
    failures = [
        line
        for line in server_log(fault_server).splitlines()
        if f"run {run_id} attempt 1: could not settle" in line
    ]
    assert len(failures) == 1, failures  # once, however many tries it took


# --- functions that end badly -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "error", "step_failed"),
    [
        ("exits_in_a_thread", "SystemExit: 3", True),
        ("interrupted_in_a_thread", "KeyboardInterrupt", False),
        ("exits", "SystemExit: leaving the event loop", False),
        ("raises_an_oddity", "Oddity: not an Exception", True),
        ("cancels_itself", "CancelledError", False),
    ],
)
def test_a_function_that_ends_badly_fails_its_run_and_the_slot_goes_on(
    fault_server: ServerProcess, function: str, error: str, step_failed: bool
) -> None:
    run_id = start_run(fault_server, function)["run_id"]

    def failed_or_slot_died() -> str | None:
        died = slot_died(fault_server)
        if died:
            return died
        return "failed" if get_run(fault_server, run_id)["status"] == "failed" else None

    # Well within the 30 s lease: the run is settled by its slot, not by lease expiry.
    outcome = wait_until(failed_or_slot_died, 20, what=f"the {function} run to fail")
    assert outcome == "failed", outcome
    run = get_run(fault_server, run_id)
    assert error in run["error"], run
    assert run["attempt"] == 1, run
    types = [e["type"] for e in events_of(fault_server, run_id)]
    assert types[-1] == "run.failed", types
    assert ("step.failed" in types) == step_failed, types
    assert_slot_running(fault_server)
    next_run_succeeds(fault_server)
    assert fault_server.process is not None and fault_server.process.poll() is None
    lines = [
        line
        for line in server_log(fault_server).splitlines()
        if f"run {run_id} attempt 1: the function failed" in line
    ]
    assert len(lines) == 1, lines
