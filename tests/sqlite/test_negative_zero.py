"""A progress of -0.0 (or a tiny negative pct that rounds to it) keeps the log auditable.

SQLite stores -0.0 as 0.0, so the hash must be computed over 0.00, not "-0.00":
otherwise `steplog audit verify` would call an untouched row edited.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from storage import EventLog, EventType, NewEvent

STEPLOG = Path(sys.executable).with_name("steplog")


async def test_negative_zero_progress_verifies(events: EventLog, tmp_path: Path) -> None:
    run, _ = await events.create_run("ticker", {})
    claimed = await events.claim_run("w1", 30, ["ticker"])
    assert claimed is not None and claimed.id == run.id
    for pct in (-0.0, -0.001, 0.0):
        stored = await events.append(NewEvent(run.id, EventType.STEP_PROGRESS, 1, "s", "m", pct))
        assert str(stored.pct) == "0.0"  # what every reader sees, and what is hashed
    [*_, last] = await events.read_run(run.id)
    assert str(last.pct) == "0.0"
    verify = [str(STEPLOG), "audit", "verify", "--db", str(tmp_path / "unit.db")]
    done = await asyncio.to_thread(
        subprocess.run, verify, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
