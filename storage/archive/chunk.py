"""A range of the live log on its way into a segment: its JSONL lines, already checked.

The archiver needs each row twice: as the text its hash covers (to check that
the range continues the chain before anything is removed) and as the line the
segment stores. `Chunk` is that range once checked, holding only the lines, so
the rows are read from the database once and never decoded into Python objects
more than the check needs.

Two ways to build one, with the same result:

- `chunk_from_rows`: from full rows (PostgreSQL, and SQLite's fallback),
  checked with `verify.check_rows` and encoded in Python (`segment.encode_row`);
- the SQLite fast path (storage/sqlite/archive_rows.py), where SQLite writes
  the JSON of every column but `pct` and Python only joins bytes and hashes.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.archive.segment import ArchiveError, Manifest, Row, encode_row


@dataclass(slots=True)
class Chunk:
    """Positions `first_pos .. last_pos`, checked to link from `prev_hash` to `last_hash`."""

    first_pos: int
    last_pos: int
    prev_hash: str
    last_hash: str
    runs: list[str]
    """Every run with an event in the range, in order of its first event."""
    first_at: str
    last_at: str
    lines: list[bytes]
    """One JSON array per row, each ending in a newline: the segment's content."""

    @property
    def rows(self) -> int:
        return len(self.lines)


def unchecked_manifest(
    first: int, last: int, prev_hash: str, rows: int, last_hash: str
) -> Manifest:
    """The anchors a range must meet, as `verify.check_rows` takes them."""
    return Manifest(
        segment="live rows", first_pos=first, last_pos=last, prev_hash=prev_hash,
        last_hash=last_hash, rows=rows, runs=[], sha256="", created_at="", first_at="",
        last_at="",
    )  # fmt: skip


def chunk_from_rows(rows: list[Row], first: int, last: int, prev_hash: str) -> Chunk:
    """Check full rows (`first .. last`, in order) and encode them; `ArchiveError` when they
    do not continue the chain from `prev_hash`."""
    from storage.archive.verify import check_rows

    if not rows:
        raise ArchiveError(f"the live log holds no rows at pos {first} to {last}")
    expected = unchecked_manifest(first, last, prev_hash, last - first + 1, str(rows[-1][10]))
    problem = check_rows(rows, expected, "the live log")
    if problem is not None:
        raise not_verified(problem.line())
    return Chunk(
        first_pos=first,
        last_pos=last,
        prev_hash=prev_hash,
        last_hash=str(rows[-1][10]),
        runs=list(dict.fromkeys(str(row[1]) for row in rows)),
        first_at=str(rows[0][9]),
        last_at=str(rows[-1][9]),
        lines=[encode_row(row) for row in rows],
    )


def not_verified(why: str) -> ArchiveError:
    return ArchiveError(
        f"the live log does not verify ({why}); nothing was archived: run `steplog audit verify`"
    )
