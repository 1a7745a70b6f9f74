"""`archive.segment` is the archiver's own event: no run may append one.

The audit reads every `archive.segment` event as "these positions left the live log
into this segment", so a function that could write one could forge that record.
"""

from __future__ import annotations

import pytest

from storage import EventLog, InvalidEvent, NewEvent


async def test_a_run_cannot_append_an_archive_segment_event(log: EventLog) -> None:
    run, _ = await log.create_run("f", {})
    claimed = await log.claim_run("w", 30, ["f"])
    assert claimed is not None and claimed.id == run.id
    head = await log.head()
    forged = {"segment": "segment-000000000001-000000000009.jsonl.gz", "first_pos": 1}
    with pytest.raises(InvalidEvent, match=r"'archive\.segment' is reserved"):
        await log.append(NewEvent(run.id, "archive.segment", claimed.attempt, data=forged))
    assert await log.head() == head  # nothing was written
    # The run itself is unharmed: it can go on and end.
    await log.append(NewEvent(run.id, "run.succeeded", claimed.attempt, data={"result": 1}))
    assert (await log.get_run(run.id)).status.value == "succeeded"
