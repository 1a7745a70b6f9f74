"""`steplog serve` under Hypercorn: a tuned config, signal handling and graceful shutdown.

On SIGTERM or SIGINT (a second one exits at once):

1. `begin_shutdown`: open streams get a last comment and end, new ones are turned
   away, the workers stop and give their runs' leases back;
2. Hypercorn stops listening and waits up to `STEPLOG_GRACEFUL_TIMEOUT` for the
   requests still in flight;
3. the app's `after_serving` closes the hub and the log (pending writes commit).

The app must end its streams itself (step 1): Hypercorn would otherwise wait for
them until the graceful timeout and then cut them off without a word.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config, Sockets
from quart import Quart

from stream.app import begin_shutdown
from stream.http.metrics import Metrics
from stream.middleware import idle_close, protocol_errors, request_heads
from stream.settings import Settings

log = logging.getLogger("steplog.serve")

ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]

KEEP_ALIVE_SECONDS = 75.0
"""Above nginx's upstream keep-alive (60 s), so nginx, not us, closes idle upstream
connections: otherwise nginx may send a request on a connection we just closed."""

BACKLOG = 1024
"""Room for a burst of reconnects (every client of a stopped instance at once)."""


def kernel_timeout_ms(write_timeout: float) -> int:
    """`TCP_USER_TIMEOUT`: how long the kernel lets sent bytes go unacknowledged.

    The kernel's clock starts when the client stops taking bytes; the app's watchdog
    starts only once the socket's send buffer is full too, which can be much later.
    Twice the write timeout (plus 2 s) lets the watchdog drop a stuck stream first
    in the usual case, and still bounds the life of a socket whose client stopped
    reading a quiet stream (one that never fills the buffer).
    """
    return int((2 * write_timeout + 2) * 1000)


class _Config(Config):
    """Hypercorn's config, with `TCP_USER_TIMEOUT` on the listening sockets.

    Accepted sockets inherit it (Linux). Once the app's watchdog has cancelled a
    stream whose client stopped reading, Hypercorn closes the connection politely,
    which waits for the unsent bytes to drain — forever, for a client that never
    reads. The user timeout makes the kernel abort such a connection instead.
    """

    user_timeout_ms = 0

    def create_sockets(self) -> Sockets:
        sockets = super().create_sockets()
        option = getattr(socket, "TCP_USER_TIMEOUT", None)
        if option is not None and self.user_timeout_ms:
            for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, option, self.user_timeout_ms)
        return sockets


def hypercorn_config(settings: Settings) -> Config:
    """The Hypercorn settings an SSE server needs (infra/hypercorn.toml mirrors them)."""
    config = _Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.accesslog = None  # stream.logs writes the request lines, without query strings
    config.errorlog = logging.getLogger("hypercorn.error")  # in our format (text or JSON)
    config.graceful_timeout = settings.graceful_timeout
    config.keep_alive_timeout = KEEP_ALIVE_SECONDS
    # No read_timeout: it would cut SSE streams, whose clients send nothing. Slow
    # request heads have their own deadline and cap (stream.middleware.request_heads).
    config.read_timeout = None
    config.backlog = BACKLOG
    config.include_server_header = False
    config.user_timeout_ms = kernel_timeout_ms(settings.write_timeout)
    return config


async def serve(app: Quart, settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully (see the module docstring)."""
    metrics: Metrics = app.extensions["steplog.metrics"]
    idle_close.install()
    protocol_errors.install()
    request_heads.install(settings, metrics)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_connection_errors_are_not_errors(metrics))
    stop = asyncio.Event()

    def on_signal(signum: signal.Signals) -> None:
        if stop.is_set():
            log.warning("second %s: exiting without waiting", signum.name)
            os._exit(128 + signum.value)
        log.info("%s: shutting down (graceful timeout %gs)", signum.name, settings.graceful_timeout)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)

    async def shutdown_trigger() -> None:
        await stop.wait()
        try:
            async with asyncio.timeout(settings.graceful_timeout):
                await begin_shutdown(app)
        except TimeoutError:
            log.warning("stopping the workers took longer than the graceful timeout")

    config = hypercorn_config(settings)
    log.info("steplog serving on http://%s:%d (log: %s)", settings.host, settings.port, settings.db)
    await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]


def _connection_errors_are_not_errors(metrics: Metrics) -> ExceptionHandler:
    """Log a connection the kernel aborted (a client that never read) as what it is.

    Hypercorn lets the `TimeoutError` of such an abort escape its connection task,
    and asyncio would report it as an unhandled error with a traceback.
    """

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        errors = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
        if exc is None or not all(isinstance(error, OSError) for error in errors):
            loop.default_exception_handler(context)
            return
        if any(getattr(error, "errno", None) == errno.ETIMEDOUT for error in errors):
            metrics.connections_aborted.inc()
        log.info("a client connection was aborted: %s", exc)

    return handle
