"""Serialization, end to end: UTF-8 as is, any text intact, datetimes as strings.

The test-only `echo` (async) and `echo_sync` (a plain function on a worker thread)
write caller-given text into the log; the stream must carry it byte-exact as UTF-8
JSON, and nothing in it may break the SSE framing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tests.support.api import client, get_run, json_bytes, post_webhook, start_run, wait_for_status
from tests.support.launcher import ServerProcess
from tests.support.sse import assert_contiguous, at_least, read_stream

NON_ASCII = "Zoë — 東京 🚀"
CONTROL = "tab\there\x00nul\x07bell\x1besc\x7fdel\u2028ls\u2029ps\x85nel"
NEWLINES = "line 1\nline 2\r\nline 3\rline 4\n\n"
INJECTION = '\n\nid: 999\nevent: completed\ndata: {"forged": true}\n\n: ping'
MESSAGES = [NON_ASCII, CONTROL, NEWLINES, INJECTION]

ESCAPED = [b"\\u00eb", b"\\u00c3", b"\\u2014", b"\\u6771", b"\\u4eac", b"\\ud83d", b"\\ude80"]
"""What `ensure_ascii=True` would have written for the non-ASCII text (any case)."""


def is_datetime_string(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


def assert_raw_utf8(raw: bytes) -> None:
    assert NON_ASCII.encode("utf-8") in raw
    lowered = raw.lower()
    for escape in ESCAPED:
        assert escape not in lowered, f"{escape!r} escape in {raw[:300]!r}"


def test_async_function_text_arrives_as_raw_utf8_and_intact(echo_server: ServerProcess) -> None:
    server = echo_server
    # Non-ASCII in the webhook body itself, signed over its UTF-8 bytes.
    response = post_webhook(server, "echo", json_bytes({"messages": MESSAGES}))
    assert response.status_code == 202, response.text
    started = response.json()

    stream = read_stream(server.url + started["stream_url"])

    assert stream.ended
    assert_raw_utf8(stream.raw)
    envelopes = stream.envelopes
    assert_contiguous(envelopes)
    # The forged frame inside a message did not become an event of its own.
    assert [event.event for event in stream.events] == ["progress"] * 6 + ["completed"]
    assert [event.id for event in stream.events] == [str(n) for n in range(1, 8)]
    logs = [env for env in envelopes if env["type"] == "log"]
    assert [env["message"] for env in logs] == MESSAGES
    assert [env["data"]["text"] for env in logs] == MESSAGES
    assert all(is_datetime_string(env["data"]["when"]) for env in logs)
    assert all(is_datetime_string(env["at"]) for env in envelopes)
    result = envelopes[-1]["data"]["result"]
    assert result["echoed"] == len(MESSAGES)
    assert is_datetime_string(result["finished_at"])

    # The run record keeps the params and the result the same way.
    run = wait_for_status(server, started["run_id"], "succeeded")
    assert run["params"]["messages"] == MESSAGES
    assert run["result"] == result
    with client(server) as http:
        raw_run = http.get(f"/runs/{started['run_id']}").content
    assert_raw_utf8(raw_run)

    # The global stream carries the same bytes, and no forged event either.
    everything = read_stream(
        f"{server.url}/events", headers=server.headers, until=at_least(len(envelopes))
    )
    assert_raw_utf8(everything.raw)
    assert [env["message"] for env in everything.envelopes if env["type"] == "log"] == MESSAGES
    assert [event.event for event in everything.events] == ["progress"] * 6 + ["completed"]
    assert [event.id for event in everything.events] == [str(n) for n in range(1, 8)]


def test_sync_function_reports_through_the_thread_bridge(echo_server: ServerProcess) -> None:
    server = echo_server
    started = start_run(server, "echo_sync", messages=MESSAGES)

    stream = read_stream(server.url + started["stream_url"])

    assert stream.ended
    assert_raw_utf8(stream.raw)
    envelopes = stream.envelopes
    assert_contiguous(envelopes)
    per_message = ["step.progress", "log"] * len(MESSAGES)
    assert [env["type"] for env in envelopes] == [
        "run.queued",
        "run.started",
        "step.started",
        *per_message,
        "step.completed",
        "run.succeeded",
    ]
    progress = [env for env in envelopes if env["type"] == "step.progress"]
    logs = [env for env in envelopes if env["type"] == "log"]
    assert [env["message"] for env in progress] == MESSAGES
    assert [env["message"] for env in logs] == MESSAGES
    assert [env["pct"] for env in progress] == [25.0, 50.0, 75.0, 100.0]
    assert all(env["step"] == "echo" for env in progress + logs)
    assert all(is_datetime_string(env["data"]["when"]) for env in progress)
    result = envelopes[-1]["data"]["result"]
    assert result["in_worker_thread"] is True
    assert is_datetime_string(result["finished_at"])
    assert get_run(server, started["run_id"])["result"] == result


def test_sync_function_failure_ends_step_and_run(echo_server: ServerProcess) -> None:
    server = echo_server
    started = start_run(server, "echo_sync", messages=["one"], fail_with=f"broke: {NON_ASCII}")

    stream = read_stream(server.url + started["stream_url"])

    assert stream.events[-1].event == "failed"
    envelopes = stream.envelopes
    assert [env["type"] for env in envelopes][-2:] == ["step.failed", "run.failed"]
    assert f"broke: {NON_ASCII}" in envelopes[-2]["data"]["error"]
    assert_raw_utf8(stream.raw)
    run = get_run(server, started["run_id"])
    assert run["status"] == "failed"
    assert f"broke: {NON_ASCII}" in run["error"]
