"""Liveness (`GET /healthz`) and readiness (`GET /readyz`) for orchestrators and balancers.

`/healthz` only says the process answers: restart it when it does not.
`/readyz` says whether this instance should get traffic now: the log answers a
read and commits a write, the tail hub is following, the workers are running, and
the instance is not shutting down. Otherwise it answers 503 (problem+json) naming
each failing check, so a balancer stops routing here and a person can see why.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from quart import Blueprint, Response

from functions.worker import WorkerPool
from storage.jsonenc import dumps
from stream.http.problems import problem
from stream.state import AppState, state

CHECK_SECONDS = 2.0
"""A log that takes longer than this to answer is not fit for traffic."""

health = Blueprint("health", __name__)


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    detail: str


@health.get("/healthz")
async def healthz() -> Response:
    return Response('{"status":"ok"}', content_type="application/json")


@health.get("/readyz")
async def readyz() -> Response:
    checks = await readiness(state())
    details = {name: check.detail for name, check in checks.items()}
    failing = [name for name, check in checks.items() if not check.ok]
    if failing:
        response = problem(503, "Not ready", f"failing: {', '.join(failing)}", checks=details)
    else:
        body = dumps({"status": "ready", "checks": details})
        response = Response(body, content_type="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


async def readiness(app_state: AppState) -> dict[str, Check]:
    """Every readiness check, by name."""
    hub = app_state.hub
    return {
        "serving": Check(True, "ok") if hub.accepting else Check(False, "shutting down"),
        "log": await _log_reachable(app_state),
        "writable": await _log_writable(app_state),
        "storage": _storage(app_state),
        "tail": Check(True, "ok") if hub.following else Check(False, "the tail hub stopped"),
        "workers": _workers(app_state.pool),
    }


async def _log_reachable(app_state: AppState) -> Check:
    try:
        async with asyncio.timeout(CHECK_SECONDS):  # not wait_for: it can swallow a cancel
            head = await app_state.events.head()
    except TimeoutError:
        return Check(False, f"no answer to a read within {CHECK_SECONDS:g}s")
    except Exception as exc:
        return Check(False, f"read failed: {type(exc).__name__}: {exc}")
    return Check(True, f"ok (head {head})")


async def _log_writable(app_state: AppState) -> Check:
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            await app_state.events.check_writable()
    except TimeoutError:
        return Check(False, f"a write did not commit within {CHECK_SECONDS:g}s")
    except Exception as exc:
        return Check(False, f"write failed: {type(exc).__name__}: {exc}")
    return Check(True, "ok")


def _storage(app_state: AppState) -> Check:
    """Free space: a full disk, or one below STEPLOG_MIN_FREE_MB (new runs refused)."""
    problem, detail = app_state.events.storage_state()
    return Check(problem is None, detail)


def _workers(pool: WorkerPool | None) -> Check:
    if pool is None:
        return Check(True, "none in this process (STEPLOG_WORKERS=0)")
    # A slot never ends of a fault (functions/worker.py): one that ended is a worker bug.
    alive = pool.slots_running
    if alive < pool.concurrency:
        return Check(False, f"{alive} of {pool.concurrency} worker slots running")
    return Check(True, f"{alive} running")
