"""Archiving survives being killed, and a full disk where the segments go, losing nothing.

A real `steplog log archive`-like process is SIGKILLed by itself at the worst
moment: after the segment is on disk and verified, before the transaction that
removes the rows. The live log must be untouched and verify, and the next run
must remove the leftover and finish the job. The segment directory on an 8 MiB
tmpfs filled to the brim gives a clean error, and nothing is removed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import NewEvent, open_log
from storage.archive import ArchiveError, archive, store_for
from storage.audit import verify_log
from tests.conftest import require

FUTURE = time.time() + 3600

KILLER = """
import asyncio, os, signal, sys, time
from pathlib import Path
from storage import open_log
from storage.archive import archive, store_for

async def main() -> None:
    log = open_log(sys.argv[1])
    await log.open()
    store = store_for(log)

    async def killed(manifest, directory):  # the segment is written and read back: die
        os.kill(os.getpid(), signal.SIGKILL)

    store.commit = killed
    await archive(store, Path(sys.argv[2]), time.time() + 3600)

asyncio.run(main())
"""


async def fill(path: str, runs: int) -> None:
    log = open_log(path)
    await log.open()
    try:
        for i in range(runs):
            run, _ = await log.create_run("f", {"i": i})
            claimed = await log.claim_run("w", 30, ["f"])
            assert claimed is not None
            await log.append(NewEvent(run.id, "log", claimed.attempt, message="x" * 200))
            await log.append(NewEvent(run.id, "run.succeeded", claimed.attempt, data={}))
    finally:
        await log.close()


async def run_archive(path: str, folder: Path) -> int:
    log = open_log(path)
    await log.open()
    try:
        result = await archive(store_for(log), folder, FUTURE)
    finally:
        await log.close()
    return result.events


def test_killed_between_the_segment_and_the_delete_loses_nothing(tmp_path: Path) -> None:
    db, folder = str(tmp_path / "log.db"), tmp_path / "archive"
    asyncio.run(fill(db, 10))
    before = verify_log(db)
    done = subprocess.run(
        [sys.executable, "-c", KILLER, db, str(folder)], capture_output=True, timeout=60
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert any(name.endswith(".jsonl.gz") for name in os.listdir(folder))  # written, unrecorded
    after = verify_log(db)
    assert after.ok and after.events == before.events and after.head_hash == before.head_hash
    assert after.note is None  # nothing archived: the live log is whole

    archived = asyncio.run(run_archive(db, folder))
    assert archived == before.events
    from storage.archive.audit import verify_with_archive

    report = verify_with_archive(db, folder, None)
    assert report.ok, report.lines()


@pytest.fixture
def tiny_volume(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "volume"
    mountpoint.mkdir()
    ok = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)], capture_output=True
        ).returncode
        == 0
    )
    require("a tmpfs mount", ok, "run the tests as root")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def test_a_full_disk_for_the_segment_removes_nothing(tmp_path: Path, tiny_volume: Path) -> None:
    db = str(tmp_path / "log.db")
    asyncio.run(fill(db, 300))
    before = verify_log(db)
    filler = tiny_volume / "filler"
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError:
            pass
    with pytest.raises(ArchiveError, match="nothing was removed"):
        asyncio.run(run_archive(db, tiny_volume / "archive"))
    assert not [n for n in os.listdir(tiny_volume / "archive") if not n.startswith("filler")]
    after = verify_log(db)
    assert after.ok and after.events == before.events and after.note is None
    filler.unlink()
    assert asyncio.run(run_archive(db, tiny_volume / "archive")) == before.events
