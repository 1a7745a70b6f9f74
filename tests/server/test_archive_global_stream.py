"""The global stream (`GET /events`) resumed from inside the archived range, against a
real server: the client is told which positions it will not see (an SSE comment before
the first frame, so EventSource keeps working), then the stream goes on from the live
log without a gap of its own."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ServerFactory
from tests.server.test_archive_http import archive_now
from tests.support.api import client, get_run, start_run, wait_for_status
from tests.support.sse import at_least, read_stream


def test_resuming_inside_the_archive_says_what_was_archived(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(tmp_path / "s", ping_interval=1, poll_interval=0.2)
    archived_ids = [start_run(server, "ticker", count=2, interval_ms=0)["run_id"] for _ in "ab"]
    for run_id in archived_ids:
        wait_for_status(server, run_id, "succeeded")
    archive_now(server.db)
    last = max(get_run(server, run_id)["archived"]["last_pos"] for run_id in archived_ids)
    live = start_run(server, "ticker", count=1, interval_ms=0)["run_id"]
    wait_for_status(server, live, "succeeded")
    headers = {**server.headers, "Last-Event-ID": "2"}

    read = read_stream(f"{server.url}/events", headers=headers, until=at_least(3))
    assert read.status == 200
    gap = [c for c in read.comments if c.startswith("archived ")]
    assert len(gap) == 1, read.comments
    assert gap[0].startswith(f"archived 3..{last}: ")
    assert f"goes on from {last + 1}" in gap[0]
    assert read.raw.index(b": archived 3..") < read.raw.index(b"\nid: ")  # before any frame
    assert [int(event.id) for event in read.events[:3]] == [last + 1, last + 2, last + 3]

    # Resuming from the live log, or past it: no such comment.
    after = {**server.headers, "Last-Event-ID": str(last + 1)}
    read = read_stream(f"{server.url}/events", headers=after, until=at_least(1))
    assert not [c for c in read.comments if c.startswith("archived ")]
    assert int(read.events[0].id) == last + 2
    with client(server) as http:
        assert http.get("/healthz").status_code == 200
