"""PostgreSQL's `disk_full` (SQLSTATE 53100) is a `StorageFull` outage, not a 500.

Fault injection through real means: a trigger on `events` raises SQLSTATE 53100,
which is exactly what the server sends when it cannot extend a file. Dropping
the trigger is "space freed": the next write commits, on the same log.
"""

from __future__ import annotations

import asyncpg

from storage import EventType, StorageFull
from storage.postgres.log import PostgresEventLog

TRIGGER = """
CREATE FUNCTION disk_is_full() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full';
END $$;
CREATE TRIGGER disk_is_full BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION disk_is_full();
"""


async def test_disk_full_is_storage_full_and_passes(pg_url: str) -> None:
    log = PostgresEventLog(pg_url)
    await log.open()
    try:
        run, _ = await log.create_run("ticker", {})
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute(TRIGGER)
            try:
                await log.create_run("ticker", {})
            except StorageFull as exc:
                assert exc.status == 503 and exc.reason == "storage_full"
                assert exc.retry_after is not None
            else:
                raise AssertionError("a write on a full disk was not refused")
            await conn.execute("DROP TRIGGER disk_is_full ON events")
        finally:
            await conn.close()
        again, created = await log.create_run("ticker", {})
        assert created and again.id != run.id
        assert await log.cancel_run(run.id, "done")
        kinds = [event.type for event in await log.read_run(run.id)]
        assert kinds == [EventType.RUN_QUEUED, EventType.RUN_CANCELLED]
    finally:
        await log.close()
