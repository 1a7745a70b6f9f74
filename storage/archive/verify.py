"""Verify archive segments: each one on its own, and all of them as one chain.

A segment verifies on its own from its manifest: the file's SHA-256 is the one
the manifest records, its rows sit at `first_pos .. last_pos` without a gap,
each row hashes (`storage.chain`) to its stored hash starting from the
manifest's `prev_hash`, the last one to `last_hash`, and each run in it runs
seq 1, 2, 3… (archived runs are whole). A set of segments verifies as one
chain when the first starts at pos 1 from the genesis hash and each starts
where the one before it ended, with its hash; the live log then continues from
the last segment's `last_hash` (`storage.audit` starts its scan there).

The live log's `archive_segments` records say which segments must exist and
which manifest each must have (its SHA-256 is also in the chained
`archive.segment` event), so a missing, altered or reordered segment is named.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from storage import chain
from storage.archive.records import SegmentRecord
from storage.archive.segment import (
    ArchiveError,
    Manifest,
    Row,
    file_sha256,
    manifest_name,
    read_manifest,
    read_rows,
)
from storage.audit.model import CHANGED, MISSING, OUT_OF_ORDER, SEQ, Problem


@dataclass(slots=True)
class SegmentsChecked:
    """The verdict over the archived prefix: where it ends and what is wrong with it."""

    events: int = 0
    last_pos: int = 0
    last_hash: str = chain.GENESIS_HASH
    segments: int = 0
    problem: Problem | None = None
    elapsed_s: float = 0.0


def check_rows(rows: Iterable[Row], manifest: Manifest, where: str) -> Problem | None:
    """Recompute the chain over a segment's rows (an iterable) from its `prev_hash`."""
    prev, expected = manifest.prev_hash, manifest.first_pos
    last_seq: dict[str, int] = {}
    count = 0
    for row in rows:
        pos, run_id, seq = row[0], row[1], row[2]
        if pos != expected:
            return Problem(
                MISSING if isinstance(pos, int) and pos > expected else OUT_OF_ORDER,
                expected,
                f"{where}: expected pos {expected}, found pos {pos!r}",
            )
        try:
            text = chain.canonical_row(*row[:10])
        except (TypeError, ValueError):
            text = None
        if text is None or chain.link(prev, text) != row[10]:
            return Problem(CHANGED, pos, f"{where}: the row at pos {pos} does not match its hash")
        if seq != last_seq.get(run_id, 0) + 1:
            return Problem(
                SEQ, pos, f"{where}: run {run_id} goes from seq {last_seq.get(run_id, 0)} to {seq}"
            )
        last_seq[run_id] = seq
        prev, expected, count = row[10], expected + 1, count + 1
    if count != manifest.rows or prev != manifest.last_hash:
        return Problem(
            MISSING,
            expected,
            f"{where}: holds {count} rows ending with hash {prev[:16]}…, its manifest says"
            f" {manifest.rows} rows ending with {manifest.last_hash[:16]}…",
        )
    return None


def check_segment(directory: Path, manifest: Manifest) -> Problem | None:
    """Verify one segment file on its own against its manifest."""
    path = directory / manifest.segment
    if not path.is_file():
        return Problem(
            MISSING,
            manifest.first_pos,
            f"segment {manifest.segment} (pos {manifest.first_pos} to {manifest.last_pos}) is"
            f" missing from {directory}",
        )
    actual = file_sha256(path)
    if actual != manifest.sha256:
        return Problem(
            CHANGED,
            manifest.first_pos,
            f"segment {manifest.segment} was altered: its SHA-256 is {actual}, its manifest"
            f" says {manifest.sha256}",
        )
    try:
        return check_rows(read_rows(path), manifest, f"segment {manifest.segment}")
    except ArchiveError as exc:
        return Problem(CHANGED, manifest.first_pos, str(exc))


def check_segments(directory: Path, records: list[SegmentRecord]) -> SegmentsChecked:
    """Verify every recorded segment in `directory`, in position order, as one chain."""
    started = time.perf_counter()
    done = SegmentsChecked()
    if records and not directory.is_dir():
        done.problem = Problem(
            MISSING, 1, f"the archive directory {directory} does not exist: pos 1 to"
            f" {records[-1].last_pos} are in {len(records)} segment(s) there"
        )  # fmt: skip
        return done
    for record in sorted(records, key=lambda r: r.first_pos):
        problem = _check_one(directory, record, done)
        if problem is not None:
            done.problem = problem
            break
        done.events += record.rows
        done.last_pos, done.last_hash = record.last_pos, record.last_hash
        done.segments += 1
    done.elapsed_s = time.perf_counter() - started
    return done


def _check_one(directory: Path, record: SegmentRecord, done: SegmentsChecked) -> Problem | None:
    name = record.segment
    if record.first_pos != done.last_pos + 1 or record.prev_hash != done.last_hash:
        return Problem(
            OUT_OF_ORDER,
            done.last_pos + 1,
            f"segment {name} starts at pos {record.first_pos} after hash"
            f" {record.prev_hash[:16]}…, but the archive so far ends at pos {done.last_pos}"
            f" with {done.last_hash[:16]}…",
        )
    if not (directory / manifest_name(name)).is_file() or not (directory / name).is_file():
        return Problem(
            MISSING,
            record.first_pos,
            f"segment {name} (pos {record.first_pos} to {record.last_pos}, {record.rows}"
            f" events) is missing from {directory}",
        )
    try:
        manifest = read_manifest(directory, name)
    except ArchiveError as exc:
        return Problem(CHANGED, record.first_pos, str(exc))
    if manifest.digest() != record.manifest_sha256:
        return Problem(
            CHANGED,
            record.first_pos,
            f"the manifest of segment {name} was altered: its SHA-256 is {manifest.digest()},"
            f" the live log recorded {record.manifest_sha256}",
        )
    if (manifest.first_pos, manifest.last_pos, manifest.prev_hash, manifest.last_hash) != (
        record.first_pos,
        record.last_pos,
        record.prev_hash,
        record.last_hash,
    ):  # pragma: no cover - the manifest hash already covers these
        return Problem(CHANGED, record.first_pos, f"segment {name}'s manifest disagrees")
    return check_segment(directory, manifest)
