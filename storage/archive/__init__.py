"""Bounded growth with the audit intact: move whole, ended runs out of the live log.

Why a prefix. The hash chain links each row to the one before it, so removing
rows from the middle would leave a live log that no longer verifies on its
own. The archiver therefore only ever removes a *prefix* of global positions,
`1 .. P` (then `P + 1 .. P'`, …), and only at a cut where every run with an
event in the prefix has all its events there and has ended before the cutoff
(`plan.py`). What remains is still one unbroken chain: its first row's hash
was computed from the hash of the row at `P`, which the live log keeps in
`archive_segments` (the *archived prefix*). So:

- a segment verifies on its own: its manifest carries `prev_hash` (the hash
  before its first row) and `last_hash`, and the rows recompute from one to
  the other (`verify.py`);
- segments verify as one chain: the first starts at pos 1 from the genesis
  hash, each next one from the previous one's `last_hash`;
- the live log verifies from the archived prefix on, without the segments
  (`storage.audit` starts its scan at the recorded anchor and says which
  positions it did not check), or together with them (`--archive DIR`).

Archiving is itself audited: each segment is recorded by an `archive.segment`
event, written in the same transaction that deletes the rows, inside the
chain, carrying the manifest's SHA-256 and anchors. The event belongs to a run
of its own (function `steplog.archive`, which ends at once), because every
event belongs to a run and a run that ended can itself be archived later;
`archive_segments` keeps the record after that.

Deleting stays impossible for every other code path: the database's
append-only trigger lets a row be deleted only when a recorded segment covers
its position (and records are themselves append-only), so the only way to
remove a row is to first record the verified segment that holds it.

Modules: `segment.py` (files and manifests), `plan.py` (which prefix),
`archiver.py` (the order of operations), `verify.py` (checking segments),
`replay.py` (reading an archived run back), `records.py` (the backend contract).
"""

from storage.archive.archiver import MAX_EVENTS, ArchiveResult, archive
from storage.archive.records import ArchiveStore, Prefix, SegmentRecord
from storage.archive.segment import ArchiveError, ArchiveNotAllowed

__all__ = [
    "MAX_EVENTS",
    "ArchiveError",
    "ArchiveNotAllowed",
    "ArchiveResult",
    "ArchiveStore",
    "Prefix",
    "SegmentRecord",
    "archive",
    "store_for",
]


def store_for(log: object) -> ArchiveStore:
    """The archive side of an open log (SQLite or PostgreSQL)."""
    from storage.sqlite.log import SQLiteEventLog

    if isinstance(log, SQLiteEventLog):
        from storage.sqlite.archive import SQLiteArchive

        return SQLiteArchive(log)
    from storage.postgres.log import PostgresEventLog

    if isinstance(log, PostgresEventLog):
        from storage.postgres.archive import PostgresArchive

        return PostgresArchive(log)
    raise ArchiveError(f"{type(log).__name__} cannot be archived")
