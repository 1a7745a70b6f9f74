"""The database file itself: created readable by its owner only, switched to WAL.

What happens to the file before the log opens it for writing, kept apart from the
log's own machinery (log.py): both run once, at start-up, on the writer thread.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

log = logging.getLogger("steplog.storage")


def create_private(path: Path) -> None:
    """Create the database file readable by its owner only, if it does not exist yet.

    The log holds the run-token key and everything functions recorded, so another
    local user must not read it (with the key they could mint run tokens). SQLite
    gives the `-wal` and `-shm` files it creates the database file's mode. An
    existing file keeps the mode its operator chose; a warning names a loose one.
    """
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning(
                "%s is readable by other users (mode %s): it holds the run-token key;"
                " chmod 600 it (and its -wal and -shm files)",
                path,
                oct(mode),
            )


WAL_SWITCH_SECONDS = 10.0
"""How long opening a new file waits for another process that is switching it to WAL."""


def use_wal(conn: sqlite3.Connection) -> None:
    """`PRAGMA journal_mode = WAL`, waiting for another process doing the same.

    Processes that open a new file at once (`serve --processes N`, a `steplog worker`
    started beside `serve`) each switch it from the rollback journal to WAL. The
    switch needs the file to themselves, and SQLite may answer "database is locked"
    at once instead of waiting out `busy_timeout` (it would otherwise risk a deadlock
    between two processes each holding a shared lock): seen as a serving process
    failing at start-up. Once the file is in WAL mode the pragma changes nothing, so
    trying again until the other process is done is enough.
    """
    deadline = time.monotonic() + WAL_SWITCH_SECONDS
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.01)  # the writer thread, at start-up only
