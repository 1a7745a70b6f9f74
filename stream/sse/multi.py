"""`GET /streams`: the events of a set of runs (and optionally of every run) on ONE stream.

Why: a browser opens at most six HTTP/1.1 connections per host, and each run page
held its own `EventSource`, so the seventh tab never went live. The stream view's
SharedWorker (stream/web/static/hub.js) holds this one stream for every tab of
the browser instead.

The request names its runs as `run=<id>:<token>` (or `run=<id>` with the API key
cookie), repeated, at most `MAX_RUNS`; `all=1` (API key only) adds every run's
events, for the runs list. Frames are those of the global stream (`GET /events`):
`data` is the envelope with `run_id`, `seq` and `pos`, and `id:` is the global `pos`,
one cursor that resumes every run of the set. Without a cursor the stream starts
at the log's head: a page reads what came before from `GET /runs/{id}/log` after
the stream has opened, so nothing falls between the two.

`event: position` frames (`id:` and `data` the `pos`) say "every event of the set
up to here was sent": one after each replayed batch, and one instead of each ping
while idle, so the cursor of a quiet set follows the log's head and a reconnect
(or a change of the set) never rescans what other runs wrote meanwhile.

Each run is authorised on its own: a run whose token is missing, forged, for
another run or expired gets `event: refused` (`data`: `run_id` and `reason`,
`forbidden` or `expired`, `run_id` `*` for `all=1` without the API key) and is left
out; the others go on. So one bad link in one tab never breaks the other tabs.
A token-only stream takes a slot of each of its tokens (the per-token cap), and
ends when the first of them expires; its client reconnects and that run is refused.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field

from quart import Request, Response, request

from storage import EventLog
from storage.runids import is_run_id
from stream.http.auth import holds_api_key
from stream.http.problems import HTTPProblem
from stream.http.tokens import Verdict, check
from stream.sse.body import REPLAY_BATCH, PingClock, farewell_stream, policed
from stream.sse.cursors import resume_cursor
from stream.sse.encoder import encode_event, encode_retry
from stream.sse.frames import global_frame
from stream.sse.hub import Subscriber, TailHub
from stream.sse.routes import admit, event_stream_response, streams
from stream.state import state

MAX_RUNS = 64
"""Runs on one stream at most: a request line with 64 `run=<id>:<token>` stays under
nginx's 8 KiB header buffer. The SharedWorker sends tabs beyond it their own stream."""


@dataclass
class Selection:
    """What a request asked for and may have: the runs it may read, and the refusals."""

    runs: frozenset[str] = frozenset()
    everything: bool = False
    tokens: tuple[str, ...] = ()
    expires_at: float | None = None
    refusals: list[bytes] = field(default_factory=list)


def refusal(run_id: str, reason: str) -> bytes:
    return encode_event(json.dumps({"run_id": run_id, "reason": reason}), event="refused")


def position(pos: int) -> bytes:
    return encode_event(f'{{"pos":{pos}}}', event="position", id=pos)


async def select(req: Request) -> Selection:
    """The runs of the request each checked against its own token (or the API key)."""
    app_state = state()
    named = req.args.getlist("run")
    everything = req.args.get("all") == "1"
    if not named and not everything:
        raise HTTPProblem(400, "No runs named", "name runs as run=<id>:<token>, or ask all=1")
    if len(named) > MAX_RUNS:
        raise HTTPProblem(
            400, "Too many runs", f"{len(named)} runs named; one stream takes at most {MAX_RUNS}"
        )
    asked: dict[str, str | None] = {}
    for item in named:
        run_id, _, presented = item.partition(":")
        if not is_run_id(run_id):
            raise HTTPProblem(400, "Malformed run id", f"{run_id[:64]!r} is not a run id")
        asked[run_id] = presented or None
    selection = Selection()
    if holds_api_key(req, app_state.api_key):
        selection.runs = frozenset(asked)
        selection.everything = everything
        return selection
    if everything:
        selection.refusals.append(refusal("*", "forbidden"))
    key = await app_state.token_key.get()
    now = app_state.clock()
    allowed: set[str] = set()
    tokens: set[str] = set()
    for run_id, token in asked.items():
        verdict = Verdict.INVALID if token is None else check(key, run_id, token, now)
        if verdict is not Verdict.VALID or token is None:
            reason = "expired" if verdict is Verdict.EXPIRED else "forbidden"
            selection.refusals.append(refusal(run_id, reason))
            continue
        allowed.add(run_id)
        tokens.add(token)
        expires = float(token.partition(".")[0])
        if selection.expires_at is None or expires < selection.expires_at:
            selection.expires_at = expires
    selection.runs = frozenset(allowed)
    selection.tokens = tuple(sorted(tokens))
    return selection


@streams.get("/streams")
async def multiplexed() -> Response:
    app_state = state()
    selection = await select(request)
    head = await app_state.events.head()
    given = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    cursor = resume_cursor(request) if given else head
    if cursor > head:
        raise HTTPProblem(
            400,
            "Cursor ahead of the log",
            f"position {cursor} does not exist; the log's head is {head}",
            head=head,
        )
    settings = app_state.settings
    hub = app_state.hub
    expires_in = None if selection.expires_at is None else selection.expires_at - app_state.clock()
    sub = admit(None, expires_in, selection.tokens)
    if sub is None:
        return event_stream_response(farewell_stream(settings.retry_ms))
    body = set_stream(
        app_state.events,
        hub,
        sub,
        selection,
        cursor,
        retry_ms=settings.retry_ms,
        ping_interval=settings.ping_interval,
    )
    return event_stream_response(policed(hub, sub, body))


async def set_stream(
    events: EventLog,
    hub: TailHub,
    sub: Subscriber,
    selection: Selection,
    cursor: int,
    *,
    retry_ms: int,
    ping_interval: float,
) -> AsyncGenerator[bytes, None]:
    """Refusals, replay after `cursor`, subscribe, replay the gap, follow (never ends)."""
    runs, everything = selection.runs, selection.everything
    yield encode_retry(retry_ms) + b"".join(selection.refusals) + position(cursor)
    if not runs and not everything:
        cursor = max(cursor, hub.tail.cursor)  # nothing to read: follow the head only
    else:
        async for chunk, read_to in _replay(events, runs, everything, cursor, sub):
            cursor = read_to
            yield chunk
    if sub.closed:
        return
    subscription = hub.subscribe(None, sub) if everything else hub.subscribe_set(runs, sub)
    with subscription:
        if runs or everything:
            async for chunk, read_to in _replay(events, runs, everything, cursor, sub):
                cursor = read_to
                yield chunk
        if sub.closed:
            return
        async for chunk in _follow(hub, sub, cursor, ping_interval):
            yield chunk


async def _replay(
    events: EventLog, runs: frozenset[str], everything: bool, cursor: int, sub: Subscriber
) -> AsyncIterator[tuple[bytes, int]]:
    """Batches of the log after `cursor`, filtered to the set, each closed by its position."""
    while not sub.closed:
        batch = await events.read_all(cursor, REPLAY_BATCH)
        if not batch:
            return
        cursor = batch[-1].pos
        frames = [global_frame(e) for e in batch if everything or e.run_id in runs]
        yield b"".join(frames) + position(cursor), cursor
        if len(batch) < REPLAY_BATCH:
            return


async def _follow(
    hub: TailHub, sub: Subscriber, cursor: int, ping_interval: float
) -> AsyncIterator[bytes]:
    """Live frames; while idle, a position (the tail's cursor) instead of a ping."""
    pings = PingClock(sub, ping_interval, hub.clock)
    known = cursor
    try:
        while True:
            if not sub.ready:
                await sub.wait()
            if sub.closed or sub.overflowed:
                return  # the client reconnects with Last-Event-ID and resumes from the log
            # Read before draining: every event up to it was pushed before the drain.
            known = max(known, hub.tail.cursor)
            chunk = []
            for key, frame, _ in sub.drain():
                if key > cursor:
                    chunk.append(frame)
                    cursor = key
            if chunk:
                pings.wrote()
                yield b"".join(chunk)
            elif pings.due():
                cursor = max(cursor, known)
                yield position(cursor)
    finally:
        pings.stop()
