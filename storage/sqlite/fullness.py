"""How the SQLite log lives with a full or nearly full disk.

The writer owns one `DiskWatch`: it cuts the WAL back with TRUNCATE checkpoints
(the WAL may hold most of the disk), watches the free space after commits, remembers
when the disk was found full, and gives leases back the time an outage took. All of
it runs on the writer thread, except `state`, which only reads.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

from storage.errors import SteplogError, StorageFull, StorageLow
from storage.sqlfiles import SQLITE as Q
from storage.sqlite.space import FreeSpace

log = logging.getLogger("steplog.storage")


class DiskWatch:
    """The writer's view of the disk under the log: full since when, low or not."""

    def __init__(self, path: Path, space: FreeSpace, clock: Callable[[], float]) -> None:
        self.path = path
        self.space = space
        self.clock = clock
        self.full_since: float | None = None
        """When (`clock`) the disk was found full; None while writes commit."""
        self.full_error: StorageFull | None = None
        self.was_low = False

    def checkpoint(self, conn: sqlite3.Connection) -> bool:
        """`PRAGMA wal_checkpoint(TRUNCATE)`: copy the WAL into the database and cut it to
        zero bytes. True when it completed (no reader held it back, nothing failed)."""
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            log.debug("WAL checkpoint failed: %s", exc)
            return False
        return not busy

    def note_space(self, conn: sqlite3.Connection) -> None:
        """After a commit (on the writer thread): at most once per `space.interval`, look
        at the free space; below the floor, cut the WAL back each time, since the
        10,000-page autocheckpoint lets it grow to about 40 MB, more than a nearly full
        disk has. Crossing the floor is logged once each way."""
        if not self.space.look():
            return
        low = self.space.low
        if low:
            self.checkpoint(conn)
        if low != self.was_low:
            self.was_low = low
            if low:
                log.warning("free space is low beside %s: %s; new runs are refused until"
                            " space is freed (STEPLOG_MIN_FREE_MB)",
                            self.path, self.space.describe())  # fmt: skip
            else:
                log.info("free space is back above the floor: %s", self.space.describe())

    def state(self) -> tuple[SteplogError | None, str]:
        """What `storage_state` answers: the error writes get now, and a description."""
        full = self.full_error
        if full is not None:
            return full, f"full: {full.detail} ({self.space.describe()})"
        if self.space.low:
            return (
                StorageLow(f"{self.space.describe()}: new runs are refused until space is freed"),
                f"low: {self.space.describe()}",
            )
        return None, self.space.describe()

    def now_full(self, exc: StorageFull) -> None:
        self.full_error = exc
        if self.full_since is None:
            self.full_since = self.clock()
            self.space.look(force=True)
            log.error("the disk holding %s is full (%s): writes get 503 storage_full until"
                      " space is freed; nothing acknowledged is lost",
                      self.path, self.space.describe())  # fmt: skip

    def committed(self) -> None:
        """A group committed: if the disk was full, the outage is over."""
        if self.full_since is not None:
            log.warning("the event log is writable again after %.0fs with the disk full",
                        self.clock() - self.full_since)  # fmt: skip
            self.full_since = self.full_error = None

    def give_leases_time(self, conn: sqlite3.Connection) -> None:
        """Add the outage to every lease that was alive when the disk filled.

        Heartbeats are writes too, so none could commit while the disk was full: without
        this, every running run's lease would expire in the outage and the first claim
        afterwards would take it over as another attempt, spending the run's attempts on
        the storage's fault rather than letting its own worker hand it back.
        """
        assert self.full_since is not None
        conn.execute(
            Q["extend_leases"],
            (self.clock() - self.full_since, self.full_since),
        )
