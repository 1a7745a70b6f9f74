"""Free space beside the SQLite file, looked at cheaply (at most once per interval).

The writer asks after every commit; `os.statvfs` runs only when the last look
is older than `interval` seconds, so appends do not pay a system call each.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

CHECK_INTERVAL = 1.0
"""Seconds between two looks at the free space."""


class FreeSpace:
    """How many bytes the database's file system has left, and whether that is below `floor`."""

    def __init__(
        self,
        directory: Path,
        floor: int,
        *,
        interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.floor = floor
        self.interval = interval
        self.clock = clock
        self.free: int | None = None
        """Bytes free at the last look (None before the first, or when it failed)."""
        self._looked = -float("inf")

    def look(self, *, force: bool = False) -> bool:
        """Look again if `interval` passed (or `force`); True when it did look."""
        now = self.clock()
        if not force and now - self._looked < self.interval:
            return False
        self._looked = now
        try:
            stats = os.statvfs(self.directory)
        except OSError:
            self.free = None
        else:
            self.free = stats.f_bavail * stats.f_frsize
        return True

    @property
    def low(self) -> bool:
        """Below the floor at the last look (unknown counts as not low)."""
        return self.free is not None and self.free < self.floor

    def describe(self) -> str:
        if self.free is None:
            return "free space unknown"
        return f"{self.free / 2**20:.1f} MB free (floor {self.floor / 2**20:g} MB)"
