"""`steplog log copy` of an archived log, on both backends: refused in one clear line.

A copy starts at pos 1 from the genesis hash; an archived log's live rows start
after its archived prefix, so copying them would either fail on the chain (a
"broken chain" that is not) or make a log whose audit cannot find the segments'
records. The copy names the archived prefix and leaves the target untouched.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import EventLog
from storage.archive import archive, store_for
from storage.copy import ArchivedSource, copy_log
from tests.sqlite.test_archive import FUTURE, finished_runs


async def test_an_archived_log_is_refused_and_the_target_untouched(
    log: EventLog,
    tmp_path: Path,
) -> None:
    await finished_runs(log, 3)
    result = await archive(store_for(log), tmp_path / "archive", FUTURE)
    assert result.events > 0
    target = tmp_path / "copy.db"
    with pytest.raises(ArchivedSource) as refused:
        await copy_log(log, str(target))
    message = str(refused.value)
    assert "\n" not in message
    assert f"positions 1..{result.segments[-1].last_pos} are archived" in message
    assert "chain" not in message.lower()  # not a misleading "hash chain broken"
    assert not target.exists()


async def test_a_log_never_archived_still_copies(
    log: EventLog,
    tmp_path: Path,
) -> None:
    await finished_runs(log, 2)
    report = await copy_log(log, str(tmp_path / "copy.db"))
    assert report.events == await log.head()
