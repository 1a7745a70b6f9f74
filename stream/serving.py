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
import ssl
from collections.abc import Callable
from typing import Any

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.utils import wrap_app
from quart import Quart

from storage.errors import SteplogError
from stream.app import begin_shutdown
from stream.http.metrics import Metrics
from stream.middleware import idle_close, protocol_errors, request_heads
from stream.settings import Settings

log = logging.getLogger("steplog.serve")

ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]
OnReady = Callable[[str], None]
"""Called with the URL being served once the server accepts connections."""


class CannotListen(SteplogError):
    """The address could not be bound (in use, not ours, no such host): nothing was started."""


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
    if settings.certfile and settings.keyfile:
        # TLS with ALPN offering h2 first: browsers then multiplex every stream of a
        # page (and of all its tabs) over one connection, with no six-per-host limit.
        config.certfile = settings.certfile
        config.keyfile = settings.keyfile
        config.alpn_protocols = ["h2", "http/1.1"]
    return config


async def serve(
    app: Quart,
    settings: Settings,
    on_ready: OnReady | None = None,
    sockets: Sockets | None = None,
    *,
    announce: bool = True,
    stop_signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
) -> None:
    """Serve until one of `stop_signals`, then shut down gracefully (see the module docstring).

    The address is bound before anything else starts (the log, the workers): a
    port in use is one line and a non-zero exit, not a half-started server.
    `announce`: log the URL and the key's whereabouts once serving (a serving
    process of `--processes N` leaves that to its parent, which says it once).
    """
    config = hypercorn_config(settings)
    check_tls_files(settings)
    if sockets is None:  # `steplog serve` binds before it even builds the app
        sockets = bind(config, settings)
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

    for signum in stop_signals:
        loop.add_signal_handler(signum, on_signal, signum)

    async def shutdown_trigger() -> None:
        # Hypercorn calls this once the app has started and the sockets accept.
        url = served_url(settings, sockets)
        if announce:
            announce_url(settings, url)
        if on_ready is not None:
            on_ready(url)
        await stop.wait()
        try:
            async with asyncio.timeout(settings.graceful_timeout):
                await begin_shutdown(app)
        except TimeoutError:
            log.warning("stopping the workers took longer than the graceful timeout")

    wrapped = wrap_app(app, config.wsgi_max_body_size, None)  # type: ignore[arg-type]
    await worker_serve(wrapped, config, sockets=sockets, shutdown_trigger=shutdown_trigger)


def announce_url(settings: Settings, url: str, processes: int = 1) -> None:
    """The start-up lines: where to point a browser, and where the API key is."""
    many = f", {processes} processes" if processes > 1 else ""
    log.info("steplog serving on %s (log: %s%s)", url, settings.db, many)
    log.info("open %s/ in a browser; %s", url, key_location(settings))


def bind_processes(settings: Settings, processes: int) -> list[Sockets]:
    """One set of listening sockets per serving process, all on one port (SO_REUSEPORT),
    so the kernel spreads new connections over the processes.

    The port is first bound once without SO_REUSEPORT: that is what refuses a port
    in use by anything, including another server that shares its own with
    SO_REUSEPORT (which would otherwise take ours in). It is then let go and bound
    again by each process's sockets, on the port found (right for `--port 0`).
    """
    config = hypercorn_config(settings)
    probe = bind(config, settings)
    port = settings.port
    for sock in [*probe.secure_sockets, *probe.insecure_sockets]:
        port = sock.getsockname()[1]
        sock.close()
    config.workers = processes  # Hypercorn sets SO_REUSEPORT on sockets for several workers
    config.bind = [f"{settings.host}:{port}"]
    return [bind(config, settings) for _ in range(processes)]


def bind(config: Config, settings: Settings) -> Sockets:
    """The listening sockets, or `CannotListen` saying what to do instead."""
    try:
        return config.create_sockets()
    except OSError as exc:
        where = f"{settings.host}:{settings.port}"
        if exc.errno == errno.EADDRINUSE:
            message = (
                f"port {settings.port} is in use — pass --port or set STEPLOG_PORT"
                " (with make: make run PORT=8001)"
            )
        elif exc.errno == errno.EACCES:
            message = f"not allowed to listen on {where} — use a port above 1023"
        elif isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            message = f"cannot listen on {where}: no such local address — check --host"
        else:
            message = f"cannot listen on {where}: {exc.strerror or exc}"
        raise CannotListen(message) from None


def check_tls_files(settings: Settings) -> None:
    """A certificate or key that cannot be used is one line at start-up, not a traceback."""
    if not (settings.certfile and settings.keyfile):
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            settings.certfile, settings.keyfile
        )
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise CannotListen(
            f"cannot use --certfile {settings.certfile} with --keyfile {settings.keyfile}: {reason}"
        ) from None


def served_url(settings: Settings, sockets: Sockets) -> str:
    """The URL to open: the bound port (right for --port 0) on a host a browser can use."""
    host = settings.host
    port = settings.port
    scheme = "https" if sockets.secure_sockets else "http"
    for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
        port = sock.getsockname()[1]
        break
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def key_location(settings: Settings) -> str:
    """Where the API key is, for the start-up line: the file or the variable, never the key."""
    if settings.api_key:
        return "the API key is the one in STEPLOG_API_KEY"
    return f"the API key is in {(settings.data_dir / 'api-key').absolute()}"


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
