"""Limits, the stream watchdog, shutdown hand-back and the storage hooks behind health
and metrics, on a real SQLite log with a fake clock (milliseconds, no server)."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest

from functions import registry
from functions.worker import WorkerPool
from storage import Event, EventLog, NewEvent, RunStatus
from stream.app import create_app
from stream.http.metrics import Metrics
from stream.settings import Settings
from stream.sse.body import run_stream
from stream.sse.hub import LIFETIME, SHUTDOWN, StreamRefused, TailHub
from tests.support.clock import FakeClock

registry.load()


def make_hub(events: EventLog, clock: FakeClock, **limits: float) -> TailHub:
    options: dict[str, float] = {
        "max_streams": 3,
        "max_streams_per_token": 2,
        "lifetime": 60.0,
        "write_timeout": 5.0,
    }
    options.update(limits)
    return TailHub(events, poll_interval=60, buffer=100, clock=clock, **options)  # type: ignore[arg-type]


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_caps_per_token_and_per_server(events: EventLog) -> None:
    hub = make_hub(events, FakeClock())
    a1, a2 = hub.admit("token-a"), hub.admit("token-a")
    with pytest.raises(StreamRefused) as refused:
        hub.admit("token-a")
    assert refused.value.reason == "token_cap"
    key = hub.admit(None)  # the API key: the server cap only
    with pytest.raises(StreamRefused) as refused:
        hub.admit("token-b")
    assert refused.value.reason == "server_cap"
    hub.release(a1)
    hub.release(a1)  # idempotent
    assert hub.open_streams == 2
    assert hub.admit("token-a") is not None
    for sub in (a2, key):
        hub.release(sub)
    assert sample(hub.metrics, "steplog_streams_refused_total", reason="token_cap") == 1
    assert sample(hub.metrics, "steplog_streams_refused_total", reason="server_cap") == 1


async def test_watchdog_ends_old_streams_and_cancels_stuck_writes(events: EventLog) -> None:
    clock = FakeClock()
    hub = make_hub(events, clock)
    old, stuck = hub.admit(None), hub.admit(None)
    blocked = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(asyncio.wait_for(blocked, None))  # a write that never ends
    stuck.attach(task)
    stuck.writing(clock.monotonic())

    await clock.advance(4.9)
    hub.check_streams()
    assert not old.closed and not task.cancelled()

    await clock.advance(0.2)  # past the write timeout
    hub.check_streams()
    await asyncio.sleep(0)  # let the cancel land
    assert task.cancelled() and stuck.dropped
    hub.release(stuck)
    assert sample(hub.metrics, "steplog_subscribers_dropped_slow_total", cause="write_timeout") == 1

    await clock.advance(60)  # past any jittered lifetime
    hub.check_streams()
    assert old.closed and old.farewell == LIFETIME
    assert sample(hub.metrics, "steplog_streams_closed_total", reason="lifetime") == 1


async def test_a_released_stream_forgets_its_task(events: EventLog) -> None:
    """A finished task holds its frames (a cancelled one, the chunk it was sending):
    a stream that outlives its response must not keep them alive."""
    hub = make_hub(events, FakeClock())
    sub = hub.admit(None)
    task = asyncio.create_task(asyncio.sleep(0))
    sub.attach(task)
    await task
    hub.release(sub)
    assert not sub.drop() and not sub.dropped  # nothing left to cancel


async def test_shut_ends_every_stream_and_turns_new_ones_away(events: EventLog) -> None:
    hub = make_hub(events, FakeClock())
    subs = [hub.admit(None), hub.admit("t")]
    assert hub.shut() == 2
    assert all(sub.closed and sub.farewell == SHUTDOWN for sub in subs)
    with pytest.raises(StreamRefused) as refused:
        hub.admit(None)
    assert refused.value.reason == "shutting_down"


async def start_run(events: EventLog, ticks: int = 0) -> tuple[str, int]:
    run, _ = await events.create_run("ticker", {})
    claimed = await events.claim_run("w", 30, ["ticker"])
    assert claimed is not None
    for tick in range(ticks):
        await events.append(NewEvent(run.id, "log", claimed.attempt, message=f"tick {tick}"))
    return run.id, claimed.attempt


async def test_a_closed_stream_says_why_and_gives_its_slot_back(events: EventLog) -> None:
    hub = make_hub(events, FakeClock())
    await hub.start()
    try:
        run_id, _attempt = await start_run(events, ticks=3)
        sub = hub.admit("t")
        body = run_stream(events, hub, sub, run_id, 0, retry_ms=100, ping_interval=60)
        assert (await anext(body)).startswith(b"retry: 100")
        replay = await anext(body)
        assert replay.count(b"\nid: ") + replay.startswith(b"id: ") == 5
        assert sample(hub.metrics, "steplog_events_replayed_total") == 5
        live = asyncio.ensure_future(anext(body))  # now waiting for live events
        hub.shut()
        assert await live == SHUTDOWN
        with pytest.raises(StopAsyncIteration):
            await anext(body)
        assert hub.open_streams == 0
    finally:
        await hub.stop()


async def test_a_stream_whose_body_never_starts_gives_its_slot_back(tmp_path: Path) -> None:
    """The client leaves while the response's start is being written, so Quart cancels
    the request before the body runs and no `finally` in the body ever does: the end of
    the request gives the slot back, at once, with the garbage collector switched off.

    Driven through the real app's ASGI entry point, because over a real socket the
    window between the view's return and the body's start is too short to hit at will.
    """
    app = create_app(Settings.from_env({}, db=str(tmp_path / "steplog.db"), workers=0))
    await app.startup()
    app_state = app.extensions["steplog"]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/events",
        "raw_path": b"/events",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"x"), (b"authorization", f"Bearer {app_state.api_key}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "extensions": {},
    }
    requested, gone = False, asyncio.Event()
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)
        if message["type"] == "http.response.start":
            gone.set()  # the client resets the connection now
            await asyncio.get_running_loop().create_future()  # a write that never drains

    gc.disable()
    try:
        await app(scope, receive, send)  # type: ignore[arg-type]
        assert [message["type"] for message in sent] == ["http.response.start"]
        assert app_state.hub.open_streams == 0
    finally:
        gc.enable()
        await app.shutdown()


async def test_stopping_workers_hand_their_runs_back_at_once(events: EventLog) -> None:
    ticking = asyncio.Event()
    events.add_commit_listener(lambda head: ticking.set() if head >= 5 else None)
    pool = WorkerPool(events, concurrency=1, lease_seconds=30, poll_interval=0.05)
    pool.start()
    run, _ = await events.create_run("ticker", {"count": 1000, "interval_ms": 20})
    try:
        async with asyncio.timeout(10):
            await ticking.wait()  # the run is in the middle of its step
    finally:
        await pool.stop()
    stopped = await events.get_run(run.id)
    assert stopped.status == RunStatus.RUNNING and stopped.attempt == 1
    # Claimable at once by another worker, long before the 30 s lease would expire.
    again = await events.claim_run("another", 30, ["ticker"])
    assert again is not None and again.id == run.id and again.attempt == 2


async def test_storage_hooks_for_health_and_metrics(events: EventLog) -> None:
    seen: list[tuple[list[str], int]] = []

    def observe(added: list[Event], waits: list[float]) -> None:
        seen.append(([event.type for event in added], len(waits)))
        assert all(0 <= wait < 5 for wait in waits)

    events.add_commit_observer(observe)  # type: ignore[arg-type]
    run_id, attempt = await start_run(events)
    await asyncio.gather(
        *(events.append(NewEvent(run_id, "log", attempt, message=str(i))) for i in range(3))
    )
    await events.check_writable()
    events.remove_commit_observer(observe)  # type: ignore[arg-type]
    await events.append(NewEvent(run_id, "log", attempt))

    assert seen[0] == (["run.queued"], 0)  # a create is committed, but not an append()
    assert seen[1] == (["run.started"], 0)
    assert sum(types.count("log") for types, _ in seen) == 3
    assert sum(acks for _, acks in seen) == 3
    assert await events.run_counts() == {"running": 1}
