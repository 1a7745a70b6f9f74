"""The SSE endpoints: `GET /runs/{id}/events` and `GET /events`.

Their contract (framing, resume, 204 at the end) is the README's "Watch a run".

Each stream is admitted by the hub first: over the server-wide cap, or over the
cap of the run token it was opened with, the answer is `429` with `Retry-After`.
While the server shuts down, a new stream gets a 200 that ends at once with the
shutdown comment, so its client reconnects elsewhere instead of giving up.

An admitted stream gives its slot back in its body's `finally`; and, for a client
that leaves before the body starts (so no `finally` in it ever runs), once more
when the request is over (`at_request_end`). Releasing is idempotent.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator

from quart import Blueprint, Response, request

from stream.http.archived import archived_gap, archived_source, with_preface
from stream.http.auth import COOKIE, bearer, is_api_key, require_api_key
from stream.http.problems import HTTPProblem
from stream.http.runs import find_run
from stream.http.tokens import expiry
from stream.middleware.request_end import at_request_end
from stream.middleware.stream_handoff import hand_off
from stream.sse.body import farewell_stream, global_stream, run_stream
from stream.sse.cursors import resume_cursor
from stream.sse.encoder import EVENT_STREAM_HEADERS
from stream.sse.hub import StreamRefused, Subscriber
from stream.state import state

streams = Blueprint("streams", __name__)

RETRY_AFTER_SECONDS = 5
"""What a refused client is told to wait: long enough for other streams to end."""


def event_stream_response(body: AsyncGenerator[bytes, None]) -> Response:
    """The stream's head; `body` is written after it, outside Quart (`hand_off`)."""
    response = Response(b"", status=200, headers=dict(EVENT_STREAM_HEADERS))
    del response.headers["Content-Length"]  # the body follows, chunked
    response.timeout = None  # streams outlive Quart's response timeout; nothing else does
    hand_off(body)
    return response


def admit(
    token: str | None, expires_in: float | None = None, tokens: tuple[str, ...] = ()
) -> Subscriber | None:
    """A slot for this stream, ending within `expires_in` seconds if given; None while
    shutting down; 429 over a cap. `tokens`: every run token the stream holds a slot
    of, when it is opened with several (`GET /streams`).

    The body gives the slot back when it ends; the request's end does, should the
    body never start.
    """
    hub = state().hub
    try:
        sub = hub.admit(token, expires_in=expires_in, tokens=tokens)
    except StreamRefused as refused:
        if refused.reason == "shutting_down":
            return None
        problem = HTTPProblem(429, "Too many open streams", refused.detail, reason=refused.reason)
        problem.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        raise problem from None
    at_request_end(functools.partial(hub.release, sub))
    return sub


def _run_token(api_key: str) -> str | None:
    """The run token this (already authorised) request came with; None for the API key.

    Mirrors `require_run_access`: the API key is bounded by the server-wide cap only,
    a run token (handed to browsers and third parties) also by the per-token cap.
    """
    if is_api_key(request.cookies.get(COOKIE), api_key):
        return None
    presented = request.args.get("token") or bearer(request)
    if presented is None or is_api_key(presented, api_key):
        return None
    return presented


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
        done = Response(b"", status=204)  # EventSource stops reconnecting on 204
        del done.headers["Content-Type"]  # no body, so no type (not Quart's text/html)
        return done
    settings = app_state.settings
    token = _run_token(app_state.api_key)
    expires_at = None if token is None else expiry(token)
    # The stream ends when its token does (like at its lifetime); the client's
    # reconnect is then answered 401 token_expired, so a link stops at its expiry.
    sub = admit(token, None if expires_at is None else expires_at - app_state.clock())
    if sub is None:
        return event_stream_response(farewell_stream(settings.retry_ms))
    source = await archived_source(app_state.events, settings, run)  # archived: its segment
    return event_stream_response(
        run_stream(
            source or app_state.events,  # type: ignore[arg-type]
            app_state.hub,
            sub,
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
    head = await app_state.events.head()
    if cursor > head:  # as for a run's stream: a position not yet written is a client error
        raise HTTPProblem(
            400,
            "Cursor ahead of the log",
            f"position {cursor} does not exist; the log's head is {head}",
            head=head,
        )
    settings = app_state.settings
    gap = await archived_gap(app_state.events, cursor)  # resuming inside the archive
    sub = admit(None)
    if sub is None:
        return event_stream_response(farewell_stream(settings.retry_ms))
    body = global_stream(
        app_state.events,
        app_state.hub,
        sub,
        cursor,
        retry_ms=settings.retry_ms,
        ping_interval=settings.ping_interval,
    )
    return event_stream_response(body if gap is None else with_preface(gap, body))


# `GET /streams`, many runs on one stream, registers itself on this blueprint.
from stream.sse import multi as _multi  # noqa: E402, F401
