"""Driver errors translated at the boundary: callers only ever see `SteplogError`s."""

from __future__ import annotations

import asyncpg

from storage.errors import SteplogError, StorageFull


class StorageUnavailable(SteplogError):
    """The PostgreSQL server cannot be reached right now; try again shortly."""

    status = 503
    title = "Database unavailable"


_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # e.g. a server's FATAL arriving while the connection idled
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    OSError,
    TimeoutError,
)


def is_connection_error(exc: BaseException) -> bool:
    """True when the connection (not the statement) is what failed."""
    return isinstance(exc, _CONNECTION_ERRORS)


DISK_FULL = "53100"
"""SQLSTATE `disk_full`: the server could not extend a file (its disk is full)."""


def is_disk_full(exc: BaseException) -> bool:
    """True when PostgreSQL refused the statement because its disk is full."""
    return getattr(exc, "sqlstate", None) == DISK_FULL


def translate(exc: BaseException) -> SteplogError:
    """The `SteplogError` to hand a caller for a driver error."""
    if isinstance(exc, SteplogError):
        return exc
    if is_disk_full(exc):
        return StorageFull(f"PostgreSQL's disk is full: {exc}")
    if is_connection_error(exc):
        return StorageUnavailable(f"PostgreSQL is unavailable: {exc}")
    return SteplogError(f"PostgreSQL refused the operation: {exc}")
