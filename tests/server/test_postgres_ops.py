"""What an operator sees of a `steplog serve` on PostgreSQL: `/readyz` and `/metrics`.

Both rest on storage hooks of the log: `check_writable` (a probe committed through
the writer, under the append lock every process shares), `run_counts` and the
commit observers (events appended, append latency). A real server on a scratch
schema runs a real ticker run; nothing is faked.
"""

from __future__ import annotations

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from storage import RunStatus
from storage.sqlfiles import POSTGRES as QUERIES
from tests.conftest import ServerFactory
from tests.support.api import run_stream_url, start_run, wait_for_status
from tests.support.launcher import ServerProcess
from tests.support.sse import assert_contiguous, read_stream
from tests.support.wait import wait_for, wait_until


def metrics(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of `GET /metrics`, by (name, sorted labels)."""
    response = httpx.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): float(sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_readyz_and_metrics_report_a_postgres_log(
    pg_url: str, server_factory: ServerFactory
) -> None:
    server = server_factory(db=pg_url, workers=1, poll_interval=0.1, ping_interval=1)
    run_id = start_run(server, "ticker", count=5, interval_ms=10)["run_id"]
    wait_for_status(server, run_id, "succeeded")
    stream = read_stream(run_stream_url(server, run_id), headers=server.headers)
    assert stream.ended
    assert_contiguous(stream.envelopes)
    events = len(stream.envelopes)
    assert events == 10  # queued, started, step.started, 5 ticks, step.completed, succeeded

    ready = httpx.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ready",
        "checks": {
            "serving": "ok",
            "log": f"ok (head {events})",
            "writable": "ok",  # committed a probe, not "not checked by this backend"
            "storage": "not watched by this backend",  # the disk is the server's
            "tail": "ok",
            "workers": "1 running",
        },
    }

    # The observer counts a commit just after its callers are answered: poll briefly.
    def counted_every_event() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        found = metrics(server)
        return found if found.get(("steplog_events_appended_total", ())) == events else None

    found = wait_until(counted_every_event, 10, what=f"steplog_events_appended_total == {events}")
    latencies = found[("steplog_append_latency_seconds_count", ())]
    assert 0 < latencies <= events  # create_run and the claim are not append() calls
    runs = {
        status.value: found[("steplog_runs", (("status", status.value),))] for status in RunStatus
    }
    assert runs == {"queued": 0, "running": 0, "succeeded": 1, "failed": 0, "cancelled": 0}


async def get(client: httpx.AsyncClient, path: str) -> httpx.Response:
    return await client.get(path, timeout=10)


async def test_readyz_fails_while_another_process_holds_the_append_lock(
    pg_url: str, server_factory: ServerFactory
) -> None:
    """A peer stuck inside a write transaction blocks every append: `/readyz` must say so."""
    server = server_factory(db=pg_url, workers=0)
    blocker = await asyncpg.connect(pg_url)
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await get(client, "/readyz")).status_code == 200
            key = await blocker.fetchval(QUERIES["append_lock_key"])
            transaction = blocker.transaction()
            await transaction.start()
            await blocker.execute(QUERIES["append_lock"], key)
            try:
                stuck = await get(client, "/readyz")
                assert stuck.status_code == 503, stuck.text
                checks = stuck.json()["checks"]
                assert checks["log"].startswith("ok"), checks  # reads still work
                assert "did not commit" in checks["writable"], checks
            finally:
                await transaction.rollback()

            async def ready() -> str | None:
                response = await get(client, "/readyz")
                return None if response.status_code != 200 else response.text

            await wait_for(ready, 20, interval=0.1, what="/readyz to answer 200 again")
    finally:
        await blocker.close()
