"""`steplog`: the one command a person uses (serve, trigger, tail, runs, bench)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Any

import click

from stream.settings import DEFAULT_DB, DEFAULT_TOKEN_TTL, Settings, credential

DEFAULT_URL = "http://127.0.0.1:8000"


class _Steplog(click.Group):
    """Show steplog's own errors (bad settings, refused input) as one line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from storage.errors import SteplogError

        try:
            return super().invoke(ctx)
        except SteplogError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Steplog, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Run webhook-triggered jobs and stream every step live from a durable event log."""


@main.command()
@click.option("--host", envvar="STEPLOG_HOST", default="127.0.0.1", show_default=True)
@click.option("--port", envvar="STEPLOG_PORT", default=8000, show_default=True, type=int)
@click.option("--db", envvar="STEPLOG_DB", default=DEFAULT_DB, show_default=True,
              help="SQLite file (or sqlite:///path).")  # fmt: skip
@click.option("--workers", envvar="STEPLOG_WORKERS", default=4, show_default=True, type=int,
              help="In-process workers (0: serve only).")  # fmt: skip
@click.option("--demo/--no-demo", envvar="STEPLOG_DEMO", default=False, show_default=True,
              help="Also serve the demo site under /demo (the scraper may fetch it).")  # fmt: skip
@click.option("--token-ttl", envvar="STEPLOG_TOKEN_TTL", default=DEFAULT_TOKEN_TTL,
              show_default=True, type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="How long a run token (a view_url) stays valid.")  # fmt: skip
@click.option("--min-free-mb", envvar="STEPLOG_MIN_FREE_MB", default=64.0, show_default=True,
              type=click.FloatRange(min=0), metavar="MB",
              help="Below this much free disk beside the SQLite file, new runs get 503"
                   " (running runs go on).")  # fmt: skip
def serve(
    host: str,
    port: int,
    db: str,
    workers: int,
    demo: bool,
    token_ttl: float,
    min_free_mb: float,
) -> None:
    """Serve the HTTP API and SSE streams, with in-process workers.

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
    from stream.app import create_app
    from stream.serving import serve as serve_app

    try:
        settings = Settings.from_env(
            host=host,
            port=port,
            db=db,
            workers=workers,
            demo=demo,
            token_ttl=token_ttl,
            min_free_mb=min_free_mb,
        )
    except ValueError as exc:  # a STEPLOG_* variable that makes no sense
        raise click.ClickException(str(exc)) from None
    _configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    asyncio.run(serve_app(app, settings))


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
        with contextlib.suppress(NotImplementedError):
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

    asyncio.run(run())


def _configure_logging(level: str, fmt: str | None = None) -> None:
    """Text or JSON lines on stderr (`STEPLOG_LOG_FORMAT` when `fmt` is not given)."""
    from stream.logs import configure

    configure(level, fmt or os.environ.get("STEPLOG_LOG_FORMAT") or "text")


def _client_settings(db: str) -> tuple[str, str]:
    """The API key the CLI uses: STEPLOG_API_KEY, else the one `serve` keeps beside the db."""
    key = os.environ.get("STEPLOG_API_KEY") or credential(db, "api-key", _missing_key)
    return key, db


def _missing_key() -> str:
    raise click.ClickException("no API key: set STEPLOG_API_KEY or run `steplog serve` first")


def _parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="-p")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


url_option = click.option("--url", envvar="STEPLOG_URL", default=DEFAULT_URL, show_default=True)
db_option = click.option(
    "--db",
    envvar="STEPLOG_DB",
    default=DEFAULT_DB,
    show_default=True,
    help="Where `serve` keeps its API key, when STEPLOG_API_KEY is unset.",
)


@main.command()
@click.argument("function")
@click.option("-p", "--param", "params", multiple=True, help="key=value (value parsed as JSON).")
@click.option("--follow", is_flag=True, help="Then tail the run until it ends.")
@url_option
@db_option
def trigger(function: str, params: tuple[str, ...], follow: bool, url: str, db: str) -> None:
    """Start a run of FUNCTION and print its id and stream URL."""
    import httpx

    key, _ = _client_settings(db)
    response = httpx.post(
        f"{url}/runs",
        json={"function": function, "params": _parse_params(params)},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    body = response.json()
    if response.status_code >= 400:
        raise click.ClickException(f"{body.get('title')}: {body.get('detail')}")
    click.echo(json.dumps(body, ensure_ascii=False))
    if follow:
        sys.exit(_tail(url, key, body["run_id"], 0, as_json=False))


@main.command()
@click.argument("run_id")
@click.option("--from", "from_seq", default=0, type=int, help="Resume after this seq.")
@click.option("--json", "as_json", is_flag=True, help="Print one event envelope per line.")
@url_option
@db_option
def tail(run_id: str, from_seq: int, as_json: bool, url: str, db: str) -> None:
    """Follow a run's events until it ends; exit 0 succeeded, 1 failed, 2 cancelled."""
    key, _ = _client_settings(db)
    sys.exit(_tail(url, key, run_id, from_seq, as_json=as_json))


def _tail(url: str, key: str, run_id: str, from_seq: int, *, as_json: bool) -> int:
    """Follow a run: JSON lines, a live rich view on a terminal, or plain lines when piped."""
    from rich.live import Live

    from stream.cli.client import follow_run
    from stream.cli.tailview import RunView, make_console

    console = make_console()
    view = RunView(run_id)
    live = None if as_json or not console.is_terminal else Live(view.render(), console=console)

    def show(envelope: dict[str, Any], raw: str) -> None:
        if as_json:
            click.echo(raw)
            return
        view.apply(envelope)
        if live is not None:
            live.update(view.render())
        else:
            click.echo(view.line(envelope))

    if live is not None:
        live.start()
    try:
        outcome = asyncio.run(follow_run(url, key, run_id, from_seq, show))
    finally:
        if live is not None:
            live.stop()
    return {"completed": 0, "failed": 1, "cancelled": 2}.get(outcome, 1)


@main.group("runs", invoke_without_command=True)
@click.option("--status", default=None)
@click.option("--function", default=None)
@click.option("--limit", default=20, show_default=True, type=int)
@url_option
@db_option
@click.pass_context
def runs_cmd(
    ctx: click.Context, status: str | None, function: str | None, limit: int, url: str, db: str
) -> None:
    """List recent runs (`runs show RUN_ID` prints one run's timeline)."""
    if ctx.invoked_subcommand is not None:
        return
    import httpx

    key, _ = _client_settings(db)
    query = {k: v for k, v in {"status": status, "function": function}.items() if v}
    response = httpx.get(
        f"{url}/runs",
        params={**query, "limit": limit},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    body = response.json()
    if response.status_code >= 400:
        raise click.ClickException(f"{body.get('title')}: {body.get('detail')}")
    for run in body["runs"]:
        click.echo(
            f"{run['id']}  {run['status']:<9}  {run['function']:<10}  attempt {run['attempt']}"
            f"  events {run['last_seq']:<6}  {run['created_at']}"
        )


from stream.cli.admin import (  # noqa: E402  (operator chores: admin.py)
    log_group,
    migrate,
    secret_key_group,
    tokens_group,
)

main.add_command(migrate)
main.add_command(log_group)
main.add_command(tokens_group)
main.add_command(secret_key_group)

from stream.cli.audit import audit_group, runs_show  # noqa: E402  (audit: audit.py)

main.add_command(audit_group)
runs_cmd.add_command(runs_show)

from stream.cli.archive import archive_cmd  # noqa: E402  (retention: archive.py)

log_group.add_command(archive_cmd)
