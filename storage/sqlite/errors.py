"""SQLite's errors translated at the boundary: callers only ever see `SteplogError`s."""

from __future__ import annotations

import errno
import sqlite3

from storage.errors import SteplogError, StorageFull

SQLITE_FULL = 13
"""The result code of a write that found no room ("database or disk is full")."""


def is_disk_full(exc: BaseException) -> bool:
    """True when SQLite (or the file system under it) ran out of space.

    `sqlite_errorcode` is checked first; the message catches builds whose
    exceptions carry no code, and `ENOSPC` a file written outside SQLite.
    """
    if isinstance(exc, StorageFull):
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF == SQLITE_FULL:
            return True
        return "database or disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


def translate(exc: Exception) -> Exception:
    """`StorageFull` for a full disk; anything else as it was (the writer logs it)."""
    if isinstance(exc, SteplogError):
        return exc
    if is_disk_full(exc):
        return StorageFull(f"the disk holding the event log is full: {exc}")
    return exc
