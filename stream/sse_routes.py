"""The SSE endpoints: `GET /runs/{id}/events` and `GET /events` (DESIGN.md's contract)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from quart import Blueprint, Response, request

from stream.api import find_run
from stream.auth import require_api_key
from stream.cursors import resume_cursor
from stream.problems import HTTPProblem
from stream.sse import EVENT_STREAM_HEADERS
from stream.state import state
from stream.streaming import global_stream, run_stream

streams = Blueprint("streams", __name__)


def _event_stream(body: AsyncIterator[bytes]) -> Response:
    response = Response(body, status=200, headers=dict(EVENT_STREAM_HEADERS))
    response.timeout = None  # streams outlive Quart's response timeout; nothing else does
    return response


@streams.get("/runs/<run_id>/events")
async def run_events(run_id: str) -> Response:
    app_state = state()
    run = await find_run(run_id)
    cursor = resume_cursor(request)
    if cursor > run.last_seq:
        raise HTTPProblem(
            400,
            "Cursor ahead of the run",
            f"event {cursor} does not exist; the run's last event is {run.last_seq}",
        )
    if run.status.finished and cursor == run.last_seq:
        return Response(b"", status=204)  # EventSource stops reconnecting on 204
    settings = app_state.settings
    return _event_stream(
        run_stream(
            app_state.events,
            app_state.hub,
            run.id,
            cursor,
            retry_ms=settings.retry_ms,
            ping_interval=settings.ping_interval,
        )
    )


@streams.get("/events")
async def all_events() -> Response:
    app_state = state()
    require_api_key(request, app_state.api_key)
    cursor = resume_cursor(request)
    settings = app_state.settings
    return _event_stream(
        global_stream(
            app_state.events,
            app_state.hub,
            cursor,
            retry_ms=settings.retry_ms,
            ping_interval=settings.ping_interval,
        )
    )
