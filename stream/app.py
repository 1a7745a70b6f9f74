"""The Quart application factory: routes, error mapping, and the serving lifecycle."""

from __future__ import annotations

import logging

from quart import Quart, Response
from werkzeug.exceptions import HTTPException

from functions import registry
from functions.worker import WorkerPool
from storage import EventLog, SteplogError, open_log
from stream.api import api
from stream.audit_routes import audit
from stream.hub import TailHub
from stream.pages import STATIC, pages
from stream.problems import HTTPProblem, problem
from stream.settings import Settings
from stream.sse_routes import streams
from stream.state import AppState

log = logging.getLogger("steplog.app")


def create_app(settings: Settings, events: EventLog | None = None) -> Quart:
    """Build the app; the log, the tail hub and the workers start with serving."""
    settings = settings.with_credentials()
    registry.load(settings.functions)
    app = Quart("steplog", static_folder=str(STATIC), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["BODY_TIMEOUT"] = 30
    events = events or open_log(settings.db, synchronous=settings.sqlite_synchronous)
    hub = TailHub(
        events, poll_interval=settings.tail_poll_interval, buffer=settings.subscriber_buffer
    )
    pool = (
        WorkerPool(
            events,
            concurrency=settings.workers,
            lease_seconds=settings.lease_seconds,
            poll_interval=settings.poll_interval,
        )
        if settings.workers > 0
        else None
    )
    app.extensions["steplog"] = state = AppState(settings, events, hub, pool)
    app.register_blueprint(api)
    app.register_blueprint(streams)
    app.register_blueprint(audit)
    app.register_blueprint(pages)
    if settings.demo:  # the demo site, and the scraper's permission to fetch it
        from stream.demo import install as install_demo

        install_demo(app, settings)

    @app.before_serving
    async def startup() -> None:
        await events.open()
        state.token_secret = await events.secret("run-token")
        await hub.start()
        if pool is not None:
            pool.start()
        log.info("steplog serving with %r, %d workers", events, settings.workers)

    @app.after_serving
    async def shutdown() -> None:
        if pool is not None:
            await pool.stop()
        await hub.stop()
        await events.close()

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response('{"status":"ok"}', content_type="application/json")

    @app.errorhandler(HTTPProblem)
    async def on_problem(exc: HTTPProblem) -> Response:
        return exc.response()

    @app.errorhandler(SteplogError)
    async def on_steplog_error(exc: SteplogError) -> Response:
        if exc.status >= 500:
            log.error("request failed: %s", exc)
        return problem(exc.status, exc.title, exc.detail)

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
