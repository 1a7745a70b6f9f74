"""`steplog audit verify` and `anchor` on a PostgreSQL log: the same chain, the same verdicts.

The rows are read in `pos` order inside one REPEATABLE READ, READ ONLY
transaction (one snapshot, no write, no lock a writer waits for), and each
row's hash is recomputed with `storage.chain` exactly as the SQLite audit does.
Positions are gapless on PostgreSQL (they are assigned under the append lock),
so a gap is a deleted row; a hash that does not link is a changed, inserted or
reordered row; per-run `seq` must run 1, 2, 3… in `pos` order; and both
append-only triggers must be present.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from storage import chain
from storage.archive.audit_hook import prefix_note
from storage.audit_model import (
    ANCHOR,
    CHANGED,
    MISSING,
    SEQ,
    TRIGGERS,
    TRUNCATED,
    Anchor,
    AuditError,
    Problem,
    Report,
)
from storage.postgres.archive import read_prefix
from storage.postgres.log import SESSION_SETTINGS

TRIGGERS_EXPECTED = ("events_no_update_or_delete", "events_no_truncate")
BATCH = 5000


def verify_url(url: str, anchor: Anchor | None = None) -> Report:
    """Verify the PostgreSQL log at `url` (blocking; the CLI's entry point)."""
    return asyncio.run(verify(url, anchor))


def head_anchor_url(url: str) -> Anchor:
    """The head of the PostgreSQL log at `url` as an anchor."""

    async def read() -> Anchor:
        conn = await _connect(url)
        try:
            row = await conn.fetchrow("SELECT pos, hash FROM events ORDER BY pos DESC LIMIT 1")
        finally:
            await conn.close()
        return Anchor(0, chain.GENESIS_HASH) if row is None else Anchor(row["pos"], row["hash"])

    return asyncio.run(read())


async def _connect(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, server_settings=SESSION_SETTINGS)
    except (OSError, asyncpg.PostgresError) as exc:
        raise AuditError(f"cannot open the PostgreSQL log: {exc}") from exc


async def verify(url: str, anchor: Anchor | None = None) -> Report:
    """Check the chain, the positions, the per-run seq runs, the triggers and the anchor."""
    started = time.perf_counter()
    report = Report(source=url.split("@")[-1])  # never echo a password
    conn = await _connect(url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            report.add(await _check_triggers(conn))
            prefix = await read_prefix(conn)  # positions up to it are in archive segments
            report.note = prefix_note(prefix)
            prev_hash, prev_pos, count = prefix.last_hash, prefix.last_pos, 0
            last_seq: dict[str, int] = {}
            first: Problem | None = None
            async for row in conn.cursor(
                "SELECT pos, run_id, seq, type, step, message, pct, data, attempt, at, hash"
                " FROM events WHERE pos > $1 ORDER BY pos",
                prefix.last_pos,
                prefetch=BATCH,
            ):
                pos, run_id, seq = row["pos"], row["run_id"], row["seq"]
                if pos != prev_pos + 1:
                    first = Problem(MISSING, prev_pos + 1, f"no row at pos {prev_pos + 1}")
                    break
                expected = chain.link(
                    prev_hash,
                    chain.canonical_row(
                        pos, run_id, seq, row["type"], row["step"], row["message"],
                        row["pct"], row["data"], row["attempt"], row["at"],
                    ),
                )  # fmt: skip
                if expected != row["hash"]:
                    first = Problem(
                        CHANGED,
                        pos,
                        "the row does not hash to its stored hash after the row before",
                    )
                    break
                if seq != last_seq.get(run_id, 0) + 1:
                    first = Problem(
                        SEQ, pos, f"run {run_id} goes from seq {last_seq.get(run_id, 0)} to {seq}"
                    )
                    break
                last_seq[run_id] = seq
                prev_hash, prev_pos, count = row["hash"], pos, count + 1
            report.add(first)
            report.events, report.head_pos, report.head_hash = count, prev_pos, prev_hash
            if anchor is not None:
                report.add(await _check_anchor(conn, anchor))
    finally:
        await conn.close()
    report.elapsed_s = time.perf_counter() - started
    return report


async def _check_triggers(conn: asyncpg.Connection) -> Problem | None:
    rows = await conn.fetch(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'events'::regclass AND NOT tgisinternal"
        " AND tgenabled <> 'D'"
    )
    present = {row["tgname"] for row in rows}
    missing = [name for name in TRIGGERS_EXPECTED if name not in present]
    if missing:
        return Problem(TRIGGERS, None, f"append-only trigger(s) missing or disabled: {missing}")
    return None


async def _check_anchor(conn: asyncpg.Connection, anchor: Anchor) -> Problem | None:
    stored = await conn.fetchval("SELECT hash FROM events WHERE pos = $1", anchor.pos)
    if stored is None and anchor.pos > 0:
        from storage.postgres.archive import archived_anchor

        archived = await archived_anchor(conn, anchor)
        if archived is not None:
            return archived
    if anchor.pos == 0:
        return None
    if stored is None:
        return Problem(TRUNCATED, anchor.pos, "the anchored row is gone: the log was cut short")
    if stored != anchor.hash:
        return Problem(ANCHOR, anchor.pos, "the anchored row has another hash: history changed")
    return None
