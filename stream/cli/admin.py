"""`steplog migrate`, `log copy`, `tokens rotate`, `secret-key new`, `webhook-secret new`: chores.

Kept apart from cli.py (which registers them) because they talk to the storage
layer directly rather than to a running server.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import click

from stream.settings import DEFAULT_DB

if TYPE_CHECKING:
    from storage.copy import CopyReport


@click.command()
@click.option("--db", envvar="STEPLOG_DB", default=DEFAULT_DB, show_default=True,
              help="SQLite file (or sqlite:///path) or postgresql://… URL.")  # fmt: skip
@click.option("--app-role", default=None, metavar="ROLE",
              help="PostgreSQL only: grant ROLE what steplog needs, and revoke UPDATE, DELETE "
                   "and TRUNCATE on events (so the app cannot rewrite history).")  # fmt: skip
@click.option("--archiver-role", default=None, metavar="ROLE",
              help="PostgreSQL only: grant ROLE what `steplog log archive` needs, the only"
                   " DELETE on events (limited to archived positions by a trigger).")  # fmt: skip
def migrate(db: str, app_role: str | None, archiver_role: str | None = None) -> None:
    """Create or upgrade the log's schema (run it before starting new steplog versions)."""
    from storage.backends import backend_for
    from storage.errors import SteplogError

    backend = backend_for(db)
    if app_role and not backend.grants_roles:
        raise click.UsageError("--app-role applies to PostgreSQL only")
    try:
        done = backend.migrate(db, app_role)
    except SteplogError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(done.line())
    if app_role:
        click.echo(f"granted {app_role}: SELECT, INSERT on events (no UPDATE/DELETE/TRUNCATE)")
    if archiver_role:
        _grant_archiver(db, archiver_role)


def _grant_archiver(db: str, role: str) -> None:
    from storage.backends import backend_for
    from storage.errors import SteplogError
    from storage.postgres.archive import grant_archiver_role

    if not backend_for(db).grants_roles:
        raise click.UsageError("--archiver-role applies to PostgreSQL only")
    try:
        asyncio.run(grant_archiver_role(db, role))
    except SteplogError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"granted {role}: SELECT, INSERT, DELETE on events (archived positions only)")


@click.group("log")
def log_group() -> None:
    """Work on a whole event log."""


@log_group.command("copy")
@click.option("--from", "source", required=True, metavar="URL",
              help="The log to copy: sqlite:///path, a path, or postgresql://…")  # fmt: skip
@click.option("--to", "target", required=True, metavar="URL",
              help="An empty log: postgresql://…, or a SQLite file (or sqlite:///path) that is"
                   " new or empty (its schema is created).")  # fmt: skip
def copy(source: str, target: str) -> None:
    """Copy a log (SQLite to PostgreSQL, PostgreSQL to SQLite, …) keeping pos, seq and
    hashes; verify the chain on arrival.

    Stop every `steplog serve` and `steplog worker` using the source first.
    """
    from storage.backends import SQLITE_SCHEME, backend_for, log_file
    from storage.errors import SteplogError
    from stream.cli.errors import CliError

    if not backend_for(source).exists(source):
        # `sqlite:///data/x.db` is the absolute /data/x.db (three slashes, then the path):
        # say which file was looked for, and how to name one relative to here.
        hint = (
            "; sqlite:///… names an absolute path: give a relative one alone (data/steplog.db)"
            if source.startswith(SQLITE_SCHEME)
            else ""
        )
        raise CliError(f"--from: no SQLite log at {log_file(source)}{hint}", 2)
    try:
        report = asyncio.run(_copy(source, target))
    except SteplogError as exc:
        raise CliError(str(exc)) from exc
    click.echo(
        f"copied {report.runs} runs and {report.events} events; chain verified on arrival"
        f" (head pos {report.head}, hash {report.head_hash})"
    )


async def _copy(source_url: str, target_url: str) -> CopyReport:
    from storage import open_log
    from storage.copy import copy_log

    def progress(what: str, count: int) -> None:
        click.echo(f"  {what}: {count}", err=True)

    source = open_log(source_url)
    await source.open()
    try:
        return await copy_log(source, target_url, progress=progress)
    finally:
        await source.close()


@click.group("tokens")
def tokens_group() -> None:
    """Run tokens (the `?token=` of a view_url)."""


@tokens_group.command("rotate")
@click.option("--db", envvar="STEPLOG_DB", default=DEFAULT_DB, show_default=True,
              help="SQLite file (or sqlite:///path) or postgresql://… URL.")  # fmt: skip
def rotate_tokens(db: str) -> None:
    """Revoke every run token: replace the key they are signed with.

    Running servers on this log pick the new key up within a few seconds; a stream
    already open on an old token ends within STEPLOG_MAX_STREAM_SECONDS and is not
    let back in. New tokens: `GET /runs/{id}` with the API key, or `steplog runs show`.
    """
    from storage.backends import backend_for
    from storage.errors import SteplogError

    if not backend_for(db).exists(db):
        raise click.UsageError(f"--db: no SQLite log at {db}")  # not a new, empty one
    try:
        asyncio.run(_rotate(db))
    except SteplogError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("run-token key rotated: every run token handed out before now is refused")


async def _rotate(db: str) -> None:
    from storage import open_log
    from stream.http.tokens import KEY_NAME

    log = open_log(db)
    await log.open()
    try:
        await log.rotate_secret(KEY_NAME)
    finally:
        await log.close()


@click.group("secret-key")
def secret_key_group() -> None:
    """The key that encrypts secrets in stored params (STEPLOG_SECRET_KEY)."""


@secret_key_group.command("new")
def new_secret_key() -> None:
    """Print a new key for STEPLOG_SECRET_KEY.

    To rotate, put it first and keep the old one after it, comma-separated
    (`STEPLOG_SECRET_KEY=NEW,OLD`): new runs are encrypted with NEW, runs queued
    before still decrypt with OLD. Drop OLD once those runs have finished.
    """
    from functions.sealing import new_key

    click.echo(new_key())


@click.group("webhook-secret")
def webhook_secret_group() -> None:
    """The Standard Webhooks secret webhooks are signed with (STEPLOG_WEBHOOK_SECRET)."""


@webhook_secret_group.command("new")
def new_webhook_secret() -> None:
    """Print a new `whsec_…` secret for STEPLOG_WEBHOOK_SECRET (what `serve` generates).

    Give the same one to every instance and to the sender that signs the webhooks.
    """
    from stream.settings import new_webhook_secret as make

    click.echo(make())
