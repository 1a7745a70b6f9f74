"""`steplog audit …` and `steplog runs show`: read the log directly, read-only.

These read the log (the SQLite file, or the PostgreSQL database) rather than
asking a server, on purpose: an auditor verifies the log itself (a server
could only report what it believes), they work on a copy taken away from the
machine, and they need no running server or API key. `runs show` reads the
same way so the timeline an auditor prints comes from the same bytes
`audit verify` checked.

Exit codes: 0 all verified; 1 something is wrong with the log (the problems
are printed); 2 the audit could not run (no such file, not a steplog log, a
malformed anchor, a bad filter). `runs show` of a run the log does not have
exits 4, like every other command naming an unknown run (stream/cli/errors.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click

from stream.settings import DEFAULT_DB

if TYPE_CHECKING:
    from storage.audit import Anchor
    from storage.audit.export import Export

EXIT_PROBLEMS = 1
EXIT_CANNOT_AUDIT = 2

db_option = click.option(
    "--db",
    envvar="STEPLOG_DB",
    default=DEFAULT_DB,
    show_default=True,
    help="The log: a SQLite file (or sqlite:///path) or postgresql://… URL; opened read-only.",
)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_CANNOT_AUDIT)


def _anchor(value: str | None) -> Anchor | None:
    """An anchor line, or the path of a file holding one (as `audit anchor > f` wrote it)."""
    from storage.audit import Anchor, AuditError

    if value is None:
        return None
    text = value
    if not value.lstrip().startswith("steplog-anchor"):
        if not Path(value).is_file():
            _fail(f"--anchor: file not found: {value} (give the anchor line, or its file)")
        text = Path(value).read_text(encoding="utf-8").strip()
    try:
        return Anchor.parse(text)
    except AuditError as exc:
        _fail(str(exc))
        raise


@click.group("audit")
def audit_group() -> None:
    """Verify the hash-chained log, anchor its head, export it (read-only)."""


@audit_group.command()
@db_option
@click.option("--anchor", "anchor_value", metavar="LINE",
              help="An anchor line from `steplog audit anchor` (or a file holding it): also"
                   " prove nothing up to it was rewritten, nothing after it cut off.")  # fmt: skip
@click.option("--file", "export_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Verify this JSONL export offline instead of the database.")  # fmt: skip
@click.option("--archive", "archive_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also verify the archive segments in this directory, with the live log"
                   " continuing from them.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(
    db: str,
    anchor_value: str | None,
    export_file: Path | None,
    as_json: bool,
    archive_dir: Path | None = None,
) -> None:
    """Walk the hash chain; print `ok: …` or name the first bad position and what is wrong.

    Exits 0 when everything verifies, 1 when the log has a problem, 2 when it
    could not be audited at all.
    """
    from storage.audit import AuditError, verify_log
    from storage.audit.file import verify_export

    anchor = _anchor(anchor_value)
    try:
        if export_file is not None:
            report = verify_export(export_file, anchor)
        elif archive_dir is not None:
            from storage.archive.audit import verify_with_archive

            report = verify_with_archive(db, archive_dir, anchor)
        else:
            report = verify_log(db, anchor)
    except AuditError as exc:
        _fail(str(exc))
        return
    if as_json:
        click.echo(json.dumps(report.as_json(), ensure_ascii=False))
    else:
        for line in report.lines():
            click.echo(line, err=line.startswith("note:"))
        if anchor is not None and report.ok:
            click.echo(f"anchor matched: pos {anchor.pos} still has hash {anchor.hash}")
    sys.exit(0 if report.ok else EXIT_PROBLEMS)


@audit_group.command()
@db_option
def anchor(db: str) -> None:
    """Print the head (position and hash) as one line to keep somewhere else.

    Later, `steplog audit verify --anchor LINE` proves the log still reaches that
    row with that hash. Verify first: an anchor vouches for what it saw.
    """
    from storage.audit import AuditError, head_anchor

    try:
        click.echo(head_anchor(db).line())
    except AuditError as exc:
        _fail(str(exc))


@audit_group.command()
@db_option
@click.option("--run", "run_id", metavar="ID", help="Only this run's events.")
@click.option("--function", metavar="F", help="Only events of runs of this function.")
@click.option("--since", metavar="T", help="Events at or after this ISO-8601 time (UTC default).")
@click.option("--until", metavar="T", help="Events before this ISO-8601 time.")
@click.option("--type", "types", metavar="T", multiple=True,
              help="Only this event type (repeat, or comma-separate, for several).")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl",
              show_default=True)  # fmt: skip
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here instead of standard output.")  # fmt: skip
def export(
    db: str,
    run_id: str | None,
    function: str | None,
    since: str | None,
    until: str | None,
    types: tuple[str, ...],
    fmt: str,
    output: Path | None,
) -> None:
    """Stream events as JSONL (with the chain fields, verifiable offline) or CSV.

    Memory stays constant whatever the size: rows are read and written in pages.
    """
    from storage.audit import AuditError
    from storage.audit.export import Export, ExportFilter

    try:
        filters = ExportFilter.build(
            run=run_id, function=function, since=since, until=until, types=types
        )
        job = Export(db, filters, fmt)
    except AuditError as exc:
        _fail(str(exc))
        return
    if output is None:
        _write(job, sys.stdout.buffer)
    else:
        with output.open("wb") as handle:
            _write(job, handle)
        click.echo(f"exported {job.count} events to {output}", err=True)


def _write(job: Export, handle: IO[bytes]) -> None:
    try:
        for chunk in job:
            handle.write(chunk)
        handle.flush()
    except BrokenPipeError:  # `… | head`: the reader has had enough
        sys.stderr.close()
        sys.exit(0)


@click.command("show")
@click.argument("run_id")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the timeline as JSON.")
@click.option("--url", envvar="STEPLOG_URL", metavar="URL",
              help="The server the printed view_url points at [default: the one `steplog"
                   " serve` or `steplog login` recorded, else http://127.0.0.1:8000].")  # fmt: skip
def runs_show(run_id: str, db: str, as_json: bool, url: str | None) -> None:
    """Print RUN_ID's timeline: every step with start, end, duration, attempt, and the ending.

    Then a fresh view_url for the run (valid STEPLOG_TOKEN_TTL seconds), signed with
    the log's current token key.
    """
    from storage.archive.audit_hook import archived_run
    from storage.audit import AuditError
    from storage.audit.timeline import UnknownRun, run_timeline
    from stream.cli.config import resolve_url
    from stream.cli.errors import NOT_FOUND

    try:
        timeline = run_timeline(db, run_id)
        link = _view_link(db, run_id, resolve_url(url))
        archived = archived_run(db, run_id)
    except UnknownRun as exc:  # the same code as `tail` / `trigger` of an unknown run
        click.echo(f"error: {exc}", err=True)
        sys.exit(NOT_FOUND)
    except AuditError as exc:
        _fail(str(exc))
        return
    if as_json:
        body = timeline.as_json()
        if archived is not None:
            body["archived"] = archived.as_json()
        if link is not None:
            body["view_url"], body["token_expires_at"] = link
        click.echo(json.dumps(body, ensure_ascii=False))
    elif archived is not None:  # its events left the live log: say where they went
        click.echo(timeline.lines()[0])
        click.echo(
            f"archived: its events are in {archived.segment} in {archived.directory}"
            f" (pos {archived.first_pos} to {archived.last_pos}); the view_url replays them"
        )
    else:
        for line in timeline.lines():
            click.echo(line)
    if link is not None and not as_json:
        click.echo(f"view_url: {link[0]}  (valid until {link[1]})")


def _view_link(db: str, run_id: str, url: str) -> tuple[str, str] | None:
    """A view_url for `run_id` and its expiry; None when the log has no token key yet."""
    import time

    from storage.audit import stored_secret
    from storage.timefmt import iso
    from stream.http.tokens import KEY_NAME, mint_for
    from stream.settings import Settings

    key = stored_secret(db, KEY_NAME)
    if key is None:
        return None
    try:
        ttl = Settings.from_env().token_ttl
    except ValueError as exc:  # a STEPLOG_* variable that makes no sense
        raise click.ClickException(str(exc)) from None
    token = mint_for(key, run_id, ttl, time.time())
    return f"{url.rstrip('/')}/runs/{run_id}?token={token.value}", iso(token.expires_at)
