"""Read an archived run back from its segment, read-only, as the live log would give it.

`SegmentRun` answers `read_run` and `read_run_envelopes` like an `EventLog` for
one run, so the stream view replays an archived run through the very code that
replays a live one (and, the run having ended, the stream ends after its
terminal event). The segment is checked against its recorded SHA-256 before
any of it is served: an altered segment is refused, not replayed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from storage.archive.records import SegmentRecord
from storage.archive.segment import ArchiveError, file_sha256, read_manifest, read_rows
from storage.envelope import envelope
from storage.model import Event


def locate(record: SegmentRecord, fallback: Path | None) -> Path | None:
    """The segment file: where it was written, else in `fallback` (the configured
    archive directory, should the segments have been moved there); None when neither."""
    for folder in (Path(record.directory), fallback):
        if folder is not None and (folder / record.segment).is_file():
            return folder
    return None


class SegmentRun:
    """One archived run's events, loaded from its segment on first use."""

    def __init__(self, record: SegmentRecord, folder: Path, run_id: str) -> None:
        self.record = record
        self.folder = folder
        self.run_id = run_id
        self._events: list[Event] | None = None

    def _load(self) -> list[Event]:
        manifest = read_manifest(self.folder, self.record.segment)
        if manifest.digest() != self.record.manifest_sha256:
            raise ArchiveError(f"the manifest of {self.record.segment} was altered")
        path = self.folder / self.record.segment
        if file_sha256(path) != manifest.sha256:
            raise ArchiveError(f"segment {self.record.segment} was altered")
        return [Event(*row) for row in read_rows(path) if row[1] == self.run_id]

    async def events(self) -> list[Event]:
        if self._events is None:
            self._events = await asyncio.to_thread(self._load)
        return self._events

    async def read_run(self, run_id: str, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        found = [e for e in await self.events() if e.seq > after_seq]
        return found[:limit]

    async def read_run_envelopes(
        self, run_id: str, after_seq: int = 0, limit: int = 1000
    ) -> list[tuple[int, str, str]]:
        return [(e.seq, e.type, envelope(e)) for e in await self.read_run(run_id, after_seq, limit)]
