"""What a finished run answers to a stream request and to a cancel: no stray types, a 409."""

from __future__ import annotations

from tests.support.api import client, start_run, wait_for_status
from tests.support.launcher import ServerProcess


def test_the_streams_204_has_no_content_type_and_cancel_is_a_409(server: ServerProcess) -> None:
    run = start_run(server, count=1, interval_ms=0)
    done = wait_for_status(server, run["run_id"], "succeeded")
    with client(server) as http:
        ended = http.get(
            f"/runs/{run['run_id']}/events", headers={"Last-Event-ID": str(done["last_seq"])}
        )
        refused = http.post(f"/runs/{run['run_id']}/cancel")
    assert ended.status_code == 204
    assert "content-type" not in ended.headers, ended.headers
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["title"] == "Run already finished"
    assert "succeeded" in refused.json()["detail"]
