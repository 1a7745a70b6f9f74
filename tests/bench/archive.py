"""The archive's benchmark: archive throughput and the live log's size before and after,
on a 1,000,000-event SQLite log of finished runs (built like the audit's, through the
real storage API: `tests.bench.audit.build_log`).

Archiving is timed through the archiver a user runs (`storage.archive.archive`, as
`steplog log archive` calls it): plan, write and read back each segment, then
one writer transaction per segment. The sizes are the database file plus its WAL:
before, after archiving (SQLite keeps the freed pages for reuse), and after
`VACUUM` (`steplog log archive --vacuum`), which gives them back to the disk.

`python -m tests.bench.archive [--quick]` prints the rows on their own.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from storage import open_log
from storage.archive import archive, store_for
from storage.sqlite.archive import file_size, vacuum
from tests.bench.audit import build_log

TARGET_RATE = 50_000
"""Events archived per second: a year of a busy log (100 M events) in about half an hour."""


def archive_benchmarks(quick: bool) -> list[tuple[str, str, str, str]]:
    """(benchmark, figure, target, met?) rows: throughput and the live log's size."""
    events = 100_000 if quick else 1_000_000
    size = f"{events:,}-event log"
    with tempfile.TemporaryDirectory(prefix="steplog-bench-archive-") as tmp:
        db = Path(tmp) / "steplog.db"
        asyncio.run(build_log(db, events))
        vacuum(str(db))  # start from a compact file, as a long-lived log would be
        before = file_size(str(db))
        archived, elapsed = asyncio.run(_archive(db, Path(tmp) / "archive"))
        after = file_size(str(db))
        _, vacuumed = vacuum(str(db))
        segments = sum(p.stat().st_size for p in (Path(tmp) / "archive").iterdir())
    rate = archived / elapsed
    mib = 2**20
    return [
        (
            f"log archive, {size}",
            f"{rate:,.0f} events/s ({archived:,} events in {elapsed:.1f} s)",
            f">= {TARGET_RATE:,} events/s",
            "yes" if rate >= TARGET_RATE else "no",
        ),
        (
            f"live log size, {size} archived",
            f"{before / mib:.1f} MiB before, {after / mib:.1f} MiB after archiving,"
            f" {vacuumed / mib:.2f} MiB after --vacuum; segments {segments / mib:.1f} MiB",
            "—",
            "—",
        ),
    ]


async def _archive(db: Path, folder: Path) -> tuple[int, float]:
    log = open_log(str(db))
    await log.open()
    try:
        started = time.perf_counter()
        result = await archive(store_for(log), folder, time.time() + 60)
        return result.events, time.perf_counter() - started
    finally:
        await log.close()


def main() -> None:
    for row in archive_benchmarks(quick="--quick" in sys.argv):
        print(" | ".join(row))


if __name__ == "__main__":
    main()
