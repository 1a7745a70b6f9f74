"""`steplog log archive`: move whole, ended runs out of the live log into segments.

It opens the log like `steplog serve` does (a `steplog serve` may keep running:
on SQLite the archive's transaction queues behind the server's writes; on
PostgreSQL it takes the same append lock), so the archiving is one more writer
of the same log, never a second copy of it. Exit codes: 0 done (also when
nothing was old enough), 1 archiving failed and nothing was removed.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from stream.settings import DEFAULT_DB


def default_archive_dir(db: str) -> Path:
    """`<the database's directory>/archive` for a log in a file (SQLite); `./archive` for
    one in a database server (PostgreSQL). `storage.backends` decides which it is."""
    from storage.backends import log_file

    path = log_file(db)
    return Path("archive") if path is None else path.parent / "archive"


def parse_cutoff(before: str | None, keep_days: float | None, now: float) -> float:
    """The cutoff as a Unix time: runs that ended before it are archived."""
    if (before is None) == (keep_days is None):
        raise click.UsageError("give exactly one of --before DATE and --keep-days N")
    if keep_days is not None:
        if not 0 <= keep_days <= 100_000:
            raise click.BadParameter("must be between 0 and 100000", param_hint="--keep-days")
        return now - keep_days * 86400
    assert before is not None
    try:
        when = datetime.fromisoformat(before.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{before[:64]!r} is not a date: use 2026-01-31 or 2026-01-31T12:00:00Z",
            param_hint="--before",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


@click.command("archive")
@click.option("--db", envvar="STEPLOG_DB", default=DEFAULT_DB, show_default=True,
              help="SQLite file (or sqlite:///path) or postgresql://… URL (on PostgreSQL,"
                   " a role allowed to archive: `steplog migrate --archiver-role`).")  # fmt: skip
@click.option("--before", metavar="DATE",
              help="Archive runs that ended before DATE (ISO 8601; UTC unless given).")  # fmt: skip
@click.option("--keep-days", type=float, metavar="N",
              help="Archive runs that ended more than N days ago.")  # fmt: skip
@click.option("--to", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Where the segments go [default: an `archive` directory beside the"
                   " SQLite file]. Keep every segment of a log in one directory.")  # fmt: skip
@click.option("--max-events", type=click.IntRange(1, 10_000_000), default=50_000,
              show_default=True, help="Events per segment (one transaction each).")  # fmt: skip
@click.option("--vacuum", is_flag=True,
              help="SQLite: VACUUM afterwards to give the freed space back to the disk"
                   " (holds the write lock while it copies the live log).")  # fmt: skip
def archive_cmd(
    db: str,
    before: str | None,
    keep_days: float | None,
    directory: Path | None,
    max_events: int,
    vacuum: bool,
) -> None:
    """Move runs that ended before a cutoff into verified segments, and out of the live log.

    Only a prefix of whole, ended runs is archived: a run still going stops it (named in
    the output). Every segment is recorded in the live log by an `archive.segment` event.
    """
    from storage.errors import SteplogError

    cutoff = parse_cutoff(before, keep_days, time.time())
    folder = directory if directory is not None else default_archive_dir(db)
    from storage.backends import log_file

    if vacuum and log_file(db) is None:
        raise click.UsageError("--vacuum applies to SQLite (PostgreSQL's autovacuum reclaims)")
    try:
        lines = asyncio.run(_archive(db, folder, cutoff, max_events))
    except SteplogError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    for line in lines:
        click.echo(line)
    if vacuum:
        from storage.sqlite.archive import vacuum as run_vacuum

        before_bytes, after_bytes = run_vacuum(str(log_file(db)))
        click.echo(f"vacuumed: {before_bytes / 2**20:.1f} MiB -> {after_bytes / 2**20:.1f} MiB")


async def _archive(db: str, folder: Path, cutoff: float, max_events: int) -> list[str]:
    from storage import open_log
    from storage.archive import archive, store_for

    log = open_log(db)
    await log.open()
    try:
        result = await archive(store_for(log), folder, cutoff, max_events=max_events)
    finally:
        await log.close()
    return result.lines()
