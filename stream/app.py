"""The Quart application factory: routes, error mapping, and the serving lifecycle.

Shutting down is two steps. `begin_shutdown` (called by `steplog serve` on SIGTERM
or SIGINT, before Hypercorn stops listening) ends every open stream with a last
comment and stops the workers, which give their runs' leases back; then Hypercorn
closes its listeners, waits for in-flight requests up to its graceful timeout, and
the `after_serving` hook closes the hub and the log.
"""

from __future__ import annotations

import logging

from quart import Quart, Response
from werkzeug.exceptions import HTTPException

from functions import registry
from functions.worker import WorkerPool
from storage import EventLog, SteplogError, open_log
from stream import fdlimit, heap
from stream.http.audit import audit
from stream.http.health import health
from stream.http.metrics import Metrics, exposition
from stream.http.problems import HTTPProblem, problem
from stream.http.runs import api
from stream.http.tokens import TokenKey
from stream.logs import RequestLog, log_transitions
from stream.middleware.protocol_errors import HeadLimit
from stream.middleware.request_end import RequestEnd
from stream.middleware.stream_handoff import StreamHandOff
from stream.openapi.document import openapi
from stream.retention import install as install_retention
from stream.settings import Settings
from stream.sse.hub import TailHub
from stream.sse.routes import streams
from stream.state import AppState
from stream.web.pages import STATIC, pages

log = logging.getLogger("steplog.app")


def create_app(settings: Settings, events: EventLog | None = None) -> Quart:
    """Build the app; the log, the tail hub and the workers start with serving."""
    settings = settings.with_credentials()
    registry.load(settings.functions)
    app = Quart("steplog", static_folder=str(STATIC), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["BODY_TIMEOUT"] = settings.body_timeout  # a body that stops arriving: 408
    events = events or open_log(
        settings.db,
        synchronous=settings.sqlite_synchronous,
        min_free_bytes=settings.min_free_bytes,
    )
    metrics = Metrics()
    hub = TailHub(
        events,
        poll_interval=settings.tail_poll_interval,
        buffer=settings.subscriber_buffer,
        max_streams=settings.max_streams,
        max_streams_per_token=settings.max_streams_per_token,
        lifetime=settings.max_stream_seconds,
        write_timeout=settings.write_timeout,
        metrics=metrics,
    )
    sealer = settings.sealer()
    pool = (
        WorkerPool(
            events,
            concurrency=settings.workers,
            lease_seconds=settings.lease_seconds,
            poll_interval=settings.poll_interval,
            sealer=sealer,
        )
        if settings.workers > 0
        else None
    )
    app.extensions["steplog"] = state = AppState(
        settings, events, hub, pool, token_key=TokenKey(events), sealer=sealer
    )
    app.extensions["steplog.metrics"] = metrics
    app.asgi_app = StreamHandOff(app.asgi_app)  # type: ignore[method-assign]
    app.asgi_app = RequestEnd(app.asgi_app)  # type: ignore[method-assign]
    app.asgi_app = HeadLimit(app.asgi_app)  # type: ignore[method-assign]
    app.asgi_app = RequestLog(app.asgi_app)  # type: ignore[method-assign]
    app.register_blueprint(health)
    app.register_blueprint(exposition)
    app.register_blueprint(openapi)
    app.register_blueprint(api)
    app.register_blueprint(streams)
    app.register_blueprint(audit)
    app.register_blueprint(pages)
    if settings.demo:  # the demo site, and the scraper's permission to fetch it
        from stream.demo import install as install_demo

        install_demo(app, settings)

    @app.before_serving
    async def startup() -> None:
        # Here rather than in `steplog serve`, so an app under Hypercorn's own CLI
        # (stream/asgi.py) gets them too.
        fdlimit.raise_for(settings.max_streams)  # a socket per stream
        await events.open()
        await state.token_key.get()  # created on first use: before the first request needs it
        for observer in (metrics.observe_commit, log_transitions):
            events.add_commit_observer(observer)
        await hub.start()
        if pool is not None:
            pool.start()
        log.info("steplog serving with %r, %d workers", events, settings.workers)
        heap.settle()  # everything start-up made lives as long as the process

    install_retention(app, settings, events)  # STEPLOG_RETENTION_DAYS (stream/retention.py)

    @app.after_serving
    async def shutdown() -> None:
        if pool is not None:
            await pool.stop("the server")
        await hub.stop()
        await events.close()

    @app.errorhandler(HTTPProblem)
    async def on_problem(exc: HTTPProblem) -> Response:
        return exc.response()

    @app.errorhandler(SteplogError)
    async def on_steplog_error(exc: SteplogError) -> Response:
        return steplog_problem(exc)

    @app.errorhandler(HTTPException)
    async def on_http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        detail = exc.description or exc.name
        if status == 413:
            detail = f"the request body is larger than {settings.max_body_bytes} bytes"
        response = problem(status, exc.name, detail)
        if status == 405 and getattr(exc, "valid_methods", None):
            response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(Exception)
    async def on_unexpected(exc: Exception) -> Response:
        log.exception("unexpected error")
        return problem(500, "Internal error", "the server failed; see its log")

    return app


def steplog_problem(exc: SteplogError) -> Response:
    """The one mapping of a `SteplogError` to its problem response.

    Its `reason`, when it has one, goes in the body and its `retry_after` in a
    `Retry-After` header. An outage that says when to come back (a full disk) is
    logged once per transition by the storage, not once per refused request.
    """
    if exc.status >= 500 and exc.retry_after is None:
        log.error("request failed: %s", exc)
    extra = {} if exc.reason is None else {"reason": exc.reason}
    response = problem(exc.status, exc.title, exc.detail, **extra)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


async def begin_shutdown(app: Quart) -> None:
    """Stop taking work and hand open streams and running runs to other instances.

    Every open stream gets `: server shutting down, reconnect` and ends, so its
    client reconnects (with `Last-Event-ID`) to an instance that stays up; new
    streams are turned away the same way. The workers stop claiming, and each run
    they hold gives its lease back at once, so a worker elsewhere takes it over
    without waiting for the lease to expire. What was committed stays committed.
    """
    state: AppState = app.extensions["steplog"]
    closed = state.hub.shut()
    log.info("shutting down: ended %d open streams; stopping workers", closed)
    if state.pool is not None:
        await state.pool.stop("the server")
