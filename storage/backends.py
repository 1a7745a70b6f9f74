"""The one seam between steplog and its storage backends: a URL names a backend.

Everything that depends on which database a log lives in goes through here:
building the log (`open_log`), creating or upgrading its schema (`migrate`),
reading it for the audit (`audit_source`), and receiving a copy of another
log (`copy_target`). This module is the only place that looks at a URL's
scheme: `postgresql://…` (or `postgres://…`) is the PostgreSQL backend;
anything else is a SQLite file, as a path or `sqlite:///path`. A backend's
modules are imported only when its log is used, so a SQLite user never loads
asyncpg.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from storage.audit.source import AuditSource
    from storage.copy import CopyTarget
    from storage.interface import EventLog

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SQLITE_SCHEME = "sqlite://"

# Options only the SQLite backend understands; callers pass them whatever the URL.
_SQLITE_ONLY = frozenset({"synchronous", "min_free_bytes"})


@dataclass(frozen=True, slots=True)
class Migration:
    """What `steplog migrate` did: the schema version before (None: not known or no
    schema yet) and after."""

    before: int | None
    after: int
    reports_before: bool
    """Whether the backend can tell the version before (PostgreSQL reads its table)."""

    def line(self) -> str:
        if self.before == self.after:
            return f"schema already at version {self.after}"
        if self.before is None and not self.reports_before:
            return f"schema at version {self.after}"
        return f"schema migrated from version {self.before or 0} to {self.after}"


class Backend(Protocol):
    """What steplog asks of a storage backend, beyond the `EventLog` itself."""

    name: str
    grants_roles: bool
    """Whether `migrate` can set up an application role without UPDATE/DELETE."""

    def file(self, url: str) -> Path | None:
        """The file the log lives in; None for a database server shared by many machines
        (whose instances must then be given the same credentials)."""

    def exists(self, url: str) -> bool:
        """Whether there may be a log at `url` already (a SQLite file that is not there
        would be created empty by opening it)."""

    def open_log(self, url: str, **options: object) -> EventLog:
        """Build (not yet open) the event log; options it does not know are ignored."""

    def migrate(self, url: str, app_role: str | None) -> Migration:
        """Create or upgrade the schema (blocking: the CLI's `steplog migrate`)."""

    def audit_source(self, url: str) -> AuditSource:
        """The log opened read-only for the audit (raises `AuditError` when it cannot be)."""

    def copy_target(self, url: str) -> CopyTarget:
        """Where `steplog log copy` writes a copy (the log must be empty)."""


class SQLiteBackend:
    name = "sqlite"
    grants_roles = False

    def file(self, url: str) -> Path:
        return Path(url.removeprefix(SQLITE_SCHEME))

    def exists(self, url: str) -> bool:
        return self.file(url).is_file()

    def open_log(self, url: str, **options: object) -> EventLog:
        from storage.sqlite.log import SQLiteEventLog

        return SQLiteEventLog(self.file(url), **options)  # type: ignore[arg-type]

    def migrate(self, url: str, app_role: str | None) -> Migration:
        from storage.sqlite import migrations

        async def run() -> None:
            log = self.open_log(url)
            await log.open()  # opening a SQLite log migrates it
            await log.close()

        asyncio.run(run())
        return Migration(None, migrations.available()[-1][0], reports_before=False)

    def audit_source(self, url: str) -> AuditSource:
        from storage.audit.sqlite import SQLiteSource

        return SQLiteSource(self.file(url))

    def copy_target(self, url: str) -> CopyTarget:
        from storage.sqlite.copy import SQLiteCopyTarget

        return SQLiteCopyTarget(self.file(url))


class PostgresBackend:
    name = "postgresql"
    grants_roles = True

    def file(self, url: str) -> None:
        return None

    def exists(self, url: str) -> bool:
        return True  # a server: whether it answers is found out by connecting

    def open_log(self, url: str, **options: object) -> EventLog:
        from storage.postgres.log import PostgresEventLog

        kept = {name: value for name, value in options.items() if name not in _SQLITE_ONLY}
        return PostgresEventLog(url, **kept)  # type: ignore[arg-type]

    def migrate(self, url: str, app_role: str | None) -> Migration:
        from storage.postgres.migrations import migrate_database

        before, after = asyncio.run(migrate_database(url, app_role))
        return Migration(before, after, reports_before=True)

    def audit_source(self, url: str) -> AuditSource:
        from storage.audit.postgres import PostgresSource

        return PostgresSource(url)

    def copy_target(self, url: str) -> CopyTarget:
        from storage.postgres.copy import PostgresCopyTarget

        return PostgresCopyTarget(url)


SQLITE = SQLiteBackend()
POSTGRES = PostgresBackend()


def backend_for(url: str) -> Backend:
    """The backend a `--db` / `STEPLOG_DB` value names."""
    return POSTGRES if url.startswith(POSTGRES_SCHEMES) else SQLITE


def log_file(url: str) -> Path | None:
    """The file a log lives in, or None when it lives in a shared database server."""
    return backend_for(url).file(url)


def open_log(url: str, **options: object) -> EventLog:
    """Build (not yet open) the event log a URL names.

    `postgresql://…` (or `postgres://…`) is the PostgreSQL backend, which ignores
    SQLite-only options such as `synchronous`; anything else is a SQLite file,
    as a path or `sqlite:///path`.
    """
    return backend_for(url).open_log(url, **options)
