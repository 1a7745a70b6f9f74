"""A server killed mid-run loses nothing: the run is reclaimed and the stream resumes."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ServerFactory
from tests.support.api import get_run, run_stream_url, start_run, wait_for_status
from tests.support.sse import assert_contiguous, at_least, read_stream, until_terminal

SETTINGS = {"lease_seconds": 2, "ping_interval": 1, "poll_interval": 0.2}


def test_run_survives_sigkill_and_stream_resumes_exactly_once(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    directory = tmp_path / "steplog"
    first_server = server_factory(directory=directory, **SETTINGS)
    ticks = 40
    run = start_run(first_server, "ticker", count=ticks, interval_ms=100)
    run_id, token = run["run_id"], run["token"]

    # A client watches part of the run...
    before = read_stream(first_server.url + run["stream_url"], until=at_least(10))
    assert not before.ended
    # ...and the server dies mid-run, without any chance to clean up.
    first_server.kill()

    second_server = server_factory(directory=directory, **SETTINGS)
    # Same log, same credentials: the token handed out before the crash still works.
    assert second_server.api_key == first_server.api_key
    after = read_stream(
        run_stream_url(second_server, run_id),
        params={"token": token},
        headers={"Last-Event-ID": before.last_id},
        until=until_terminal,
        timeout=30,
    )

    finished = wait_for_status(second_server, run_id, "succeeded")
    envelopes = before.envelopes + after.envelopes
    assert_contiguous(envelopes)
    assert after.events[0].id == str(int(before.last_id) + 1)
    assert after.events[-1].event == "completed"
    assert envelopes[-1]["type"] == "run.succeeded"
    assert envelopes[-1]["seq"] == finished["last_seq"] == len(envelopes)

    # The second server took the run over as attempt 2, said so, and ran it to the end.
    assert finished["attempt"] == 2
    types = [env["type"] for env in envelopes]
    assert types.count("run.retrying") == 1
    retry_at = types.index("run.retrying")
    retrying = envelopes[retry_at]
    assert retrying["attempt"] == 2
    assert retrying["data"]["previous_attempt"] == 1
    assert all(env["attempt"] <= 1 for env in envelopes[:retry_at])
    assert all(env["attempt"] == 2 for env in envelopes[retry_at:])
    second_attempt = envelopes[retry_at + 1 :]
    assert [env["type"] for env in second_attempt][:2] == ["run.started", "step.started"]
    assert [env["data"]["tick"] for env in second_attempt if env["type"] == "step.progress"] == (
        list(range(1, ticks + 1))
    )
    assert finished["result"] == {"ticks": ticks}

    # What the client pieced together is exactly what the log holds: a fresh full replay
    # from the new server matches it event for event.
    replay = read_stream(run_stream_url(second_server, run_id), headers=second_server.headers)
    assert replay.ended
    assert replay.events == before.events + after.events
    assert get_run(second_server, run_id) == finished
