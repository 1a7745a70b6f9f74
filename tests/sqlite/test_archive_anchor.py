"""`audit verify --anchor` when the anchored row has been archived: never passed unchecked.

Without `--archive` the audit says the row is archived and how to check it; with
`--archive DIR` it checks the anchor against the segment holding the row.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from storage import EventLog
from storage.archive import archive, store_for
from storage.archive.audit import verify_with_archive
from storage.audit import Anchor, Report, verify_log
from tests.sqlite.test_archive import FUTURE, finished_runs


def live_verify(url: str, anchor: Anchor) -> Report:
    return verify_log(url, anchor)


async def test_an_archived_anchor_is_named_then_checked_against_its_segment(
    log: EventLog,
    log_url: str,
    tmp_path: Path,
) -> None:
    await finished_runs(log, 4)
    [row] = [e for e in await log.read_all(6) if e.pos == 7]
    anchor = Anchor(7, row.hash)
    await finished_runs(log, 2)
    result = await archive(store_for(log), tmp_path / "archive", FUTURE)
    assert result.events >= 7  # the anchored row is archived

    alone = await asyncio.to_thread(live_verify, log_url, anchor)
    assert not alone.ok
    assert "the anchored row at pos 7 is archived" in alone.problems[0].detail
    assert "--archive DIR" in alone.problems[0].detail

    both = await asyncio.to_thread(verify_with_archive, log_url, tmp_path / "archive", anchor)
    assert both.ok, both.lines()

    forged = Anchor(7, "f" * 64)
    wrong = await asyncio.to_thread(verify_with_archive, log_url, tmp_path / "archive", forged)
    assert not wrong.ok
    assert f"the anchor says {'f' * 64}" in wrong.problems[0].detail
    assert "archived in segment-" in wrong.problems[0].detail

    # An anchor at the live head still works as before, with or without the archive.
    head = Anchor(await log.head(), (await log.read_all(await log.head() - 1))[0].hash)
    assert (await asyncio.to_thread(live_verify, log_url, head)).ok
    assert (await asyncio.to_thread(verify_with_archive, log_url, tmp_path / "archive", head)).ok
