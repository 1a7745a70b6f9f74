"""`steplog`: the one command a person uses (serve, trigger, tail, runs, bench)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from stream import eventloop
from stream.cli.errors import EXIT_CODES_HELP, CliError
from stream.settings import DEFAULT_DB, DEFAULT_TOKEN_TTL, Settings

if TYPE_CHECKING:
    from hypercorn.config import Sockets

    from stream.serving import OnReady


class _Steplog(click.Group):
    """Show steplog's own errors (bad settings, refused input) as one line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from storage.errors import SteplogError

        try:
            return super().invoke(ctx)
        except SteplogError as exc:
            raise CliError(str(exc)) from exc


@click.group(
    cls=_Steplog, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP
)
def main() -> None:
    """Run webhook-triggered jobs and stream every step live from a durable event log.

    The commands that talk to a server (trigger, tail, runs) use --url /
    STEPLOG_URL and find the API key in STEPLOG_API_KEY, else beside the
    database (--db / STEPLOG_DB), else in the per-user file that `steplog serve`
    and `steplog login` write ($XDG_CONFIG_HOME/steplog/config.json).
    """


@main.command()
@click.option("--host", envvar="STEPLOG_HOST", default="127.0.0.1", show_default=True)
@click.option("--port", envvar="STEPLOG_PORT", default=8000, show_default=True, type=int)
@click.option("--db", envvar="STEPLOG_DB", default=DEFAULT_DB, show_default=True,
              help="SQLite file (or sqlite:///path).")  # fmt: skip
@click.option("--processes", envvar="STEPLOG_PROCESSES", default=lambda: os.cpu_count() or 1,
              show_default="one per core", type=click.IntRange(min=1, max=1024),
              help="Serving processes sharing the port (1: a single process).")  # fmt: skip
@click.option("--workers", envvar="STEPLOG_WORKERS", default=4, show_default=True, type=int,
              help="Worker slots, shared out among the processes (0: serve only).")  # fmt: skip
@click.option("--demo/--no-demo", envvar="STEPLOG_DEMO", default=False, show_default=True,
              help="Also serve the demo site under /demo (the scraper may fetch it).")  # fmt: skip
@click.option("--token-ttl", envvar="STEPLOG_TOKEN_TTL", default=DEFAULT_TOKEN_TTL,
              show_default=True, type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="How long a run token (a view_url) stays valid.")  # fmt: skip
@click.option("--min-free-mb", envvar="STEPLOG_MIN_FREE_MB", default=64.0, show_default=True,
              type=click.FloatRange(min=0), metavar="MB",
              help="Below this much free disk beside the SQLite file, new runs get 503"
                   " (running runs go on).")  # fmt: skip
@click.option("--certfile", envvar="STEPLOG_CERTFILE", default=None,
              type=click.Path(dir_okay=False), metavar="PEM",
              help="Serve HTTPS and HTTP/2 with this certificate (chain);"
                   " needs --keyfile.")  # fmt: skip
@click.option("--keyfile", envvar="STEPLOG_KEYFILE", default=None,
              type=click.Path(dir_okay=False), metavar="PEM",
              help="The private key of --certfile.")  # fmt: skip
def serve(
    host: str,
    port: int,
    db: str,
    processes: int,
    workers: int,
    demo: bool,
    token_ttl: float,
    min_free_mb: float,
    certfile: str | None,
    keyfile: str | None,
) -> None:
    """Serve the HTTP API and SSE streams, with in-process workers.

    --processes N (default: one per core) runs N serving processes on the one
    port, each with its share of the worker slots; SIGTERM to the parent stops
    them all gracefully, and one that dies is replaced.

    SIGTERM or SIGINT shuts down gracefully: open streams are told to reconnect,
    running runs are handed back, and the process exits within
    STEPLOG_GRACEFUL_TIMEOUT seconds. Limits, health checks, metrics and log
    format are STEPLOG_* variables (README, "Configuration" and "Operations"),
    e.g. slow clients: a request head gets 408 after STEPLOG_HEADER_TIMEOUT (10 s)
    and a body after STEPLOG_BODY_TIMEOUT (30 s); while
    STEPLOG_MAX_PENDING_HEADERS (1024) new connections have not sent a whole
    head, another is closed at once.

    Secrets in params (a scrape's login) are stored encrypted with
    STEPLOG_SECRET_KEY (comma-separated Fernet keys, the first encrypts; unset:
    generated in `secret-key` beside the SQLite file; with PostgreSQL it must be
    set for such runs to be accepted).
    """
    try:
        settings = Settings.from_env(
            host=host,
            port=port,
            db=db,
            processes=processes,
            workers=workers,
            demo=demo,
            token_ttl=token_ttl,
            min_free_mb=min_free_mb,
            certfile=certfile,
            keyfile=keyfile,
        )
        loop = eventloop.loop_factory(settings.event_loop)
    except ValueError as exc:  # a STEPLOG_* variable that makes no sense
        raise click.ClickException(str(exc)) from None
    _configure_logging(settings.log_level, settings.log_format)
    from stream.serving import bind, hypercorn_config

    def on_ready(url: str) -> None:
        """Tell the CLI on this machine where this server and its key file are."""
        from storage.backends import log_file

        if settings.api_key or log_file(settings.db) is None:
            return  # a key from the environment: the CLI gets it the same way
        from stream.cli.config import remember_server

        with contextlib.suppress(OSError):  # a read-only home is no reason not to serve
            remember_server(url, settings.data_dir / "api-key")

    if settings.processes > 1:
        raise SystemExit(_serve_processes(settings, on_ready, loop))
    # The port first: a busy one is one line before anything is set up or logged
    # (the demo site, the log, key files).
    _serve_one(settings, bind(hypercorn_config(settings), settings), loop, on_ready)


def _serve_one(
    settings: Settings,
    sockets: Sockets,
    loop: eventloop.LoopFactory,
    on_ready: OnReady,
    **options: Any,
) -> None:
    """One serving process until it is stopped: `steplog serve`, or one of the
    processes of `--processes N` (`options`: how it differs, see `serving.serve`)."""
    from stream.app import create_app
    from stream.serving import serve

    eventloop.run(serve(create_app(settings), settings, on_ready, sockets, **options), loop)


def _serve_processes(settings: Settings, on_ready: OnReady, loop: eventloop.LoopFactory) -> int:
    """`serve --processes N` (N > 1): the port, the credentials, then the children
    (stream/cli/supervisor.py); the exit code."""
    from stream.cli.supervisor import Supervisor
    from stream.serving import announce_url, bind_processes, check_tls_files, served_url

    sockets = bind_processes(settings, settings.processes)
    check_tls_files(settings)
    given = settings  # what the start-up lines describe (a key from the environment, or not)
    settings = settings.with_credentials()  # once, here: every process reads the same
    url = served_url(settings, sockets[0])

    def child(own: Settings, mine: Sockets, ready: Callable[[], None]) -> int:
        only_term = (signal.SIGTERM,)  # SIGINT comes through the parent
        _serve_one(own, mine, loop, lambda _: ready(), announce=False, stop_signals=only_term)
        return 0

    def all_ready() -> None:
        announce_url(given, url, settings.processes)
        on_ready(url)

    return Supervisor(settings, sockets, child, all_ready).run()


@main.command()
@click.option("--db", envvar="STEPLOG_DB", default=DEFAULT_DB, show_default=True)
@click.option("--concurrency", "--workers", "workers", envvar="STEPLOG_WORKERS", default=4,
              show_default=True, type=int, help="Concurrent runs in this process.")  # fmt: skip
def worker(db: str, workers: int) -> None:
    """Run functions from the log in a separate process (no HTTP).

    It decrypts secrets in params with STEPLOG_SECRET_KEY (unset: the `secret-key`
    file `serve` keeps beside the SQLite file); a run it cannot decrypt fails with
    a message saying so.
    """
    from functions import registry
    from functions.worker import WorkerPool
    from storage import open_log

    try:
        settings = Settings.from_env(db=db, workers=workers).with_secret_key()
        event_loop = eventloop.loop_factory(settings.event_loop)
    except ValueError as exc:  # a STEPLOG_* variable that makes no sense
        raise click.ClickException(str(exc)) from None
    _configure_logging(settings.log_level)
    registry.load(settings.functions)
    if settings.demo:  # the server's demo site: this worker may scrape it too
        from stream.demo import allow_targets

        allow_targets(settings)

    async def run() -> None:
        from stream.logs import log_transitions

        events = open_log(
            settings.db,
            synchronous=settings.sqlite_synchronous,
            min_free_bytes=settings.min_free_bytes,
        )
        await events.open()
        # The runs this process executes are logged here, one line per transition,
        # as `serve` logs its own (each process logs only the commits it made).
        events.add_commit_observer(log_transitions)
        pool = WorkerPool(
            events,
            concurrency=settings.workers,
            lease_seconds=settings.lease_seconds,
            poll_interval=settings.poll_interval,
            sealer=settings.sealer(),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        pool.start()
        click.echo(f"steplog worker {pool.worker_id} on {settings.db}", err=True)
        await stop.wait()
        await pool.stop()
        await events.close()

    eventloop.run(run(), event_loop)


def _configure_logging(level: str, fmt: str | None = None) -> None:
    """Text or JSON lines on stderr (`STEPLOG_LOG_FORMAT` when `fmt` is not given)."""
    from stream.logs import configure

    configure(level, fmt or os.environ.get("STEPLOG_LOG_FORMAT") or "text")


from stream.cli.admin import (  # noqa: E402  (operator chores: admin.py)
    log_group,
    migrate,
    secret_key_group,
    tokens_group,
    webhook_secret_group,
)

main.add_command(migrate)
main.add_command(log_group)
main.add_command(tokens_group)
main.add_command(secret_key_group)
main.add_command(webhook_secret_group)

from stream.cli.audit import audit_group, runs_show  # noqa: E402  (audit: audit.py)

main.add_command(audit_group)

from stream.cli.commands import login, runs_cmd, tail, trigger  # noqa: E402  (talk to a server)

runs_cmd.add_command(runs_show)
main.add_command(trigger)
main.add_command(tail)
main.add_command(runs_cmd)
main.add_command(login)
from stream.cli.archive import archive_cmd  # noqa: E402  (retention: archive.py)

log_group.add_command(archive_cmd)
