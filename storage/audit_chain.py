"""The hot loop of the audit: walk the rows in `pos` order and check every link.

Speed comes from doing as little per row in Python as possible. The source
hands the loop pairs `(canonical_bytes, hash)` for positions 1, 2, 3…: the
SQLite source has SQLite itself build the canonical text in C (`json_array`,
see `storage.audit_rows`), so Python only concatenates, hashes and compares:
no `Event` objects, no dicts, nothing kept per row or per run. Positions and
per-run `seq` runs are checked by SQL over the indexes (`storage.audit_runs`).
Whenever a fast row does not match, the row is re-encoded with `canonical`
below, which follows the README's rules exactly (`storage.chain`), before
anything is reported: SQLite is an accelerator, never the judge.

The scan stops at the first broken link, since that is the position an
auditor has to look at; `diagnose` then looks at the rows that follow to tell
a changed row from an inserted one, a swap, or a renumbered deletion.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, Protocol

from storage import chain
from storage.audit_model import CHANGED, INSERTED, MISSING, OUT_OF_ORDER, SEQ, Problem
from storage.model import TERMINAL_EVENTS

Row = tuple[Any, ...]
"""A full row: (pos, run_id, seq, type, step, message, pct, data, attempt, at, hash)."""

FastRow = tuple[bytes, Any]
"""(canonical UTF-8, or b"" to have Python check the row exactly; hash), pos after pos."""

WINDOW = 5000
"""Rows after a broken link that `diagnose` searches for a swap partner."""

TERMINAL_TYPES: frozenset[str] = frozenset(str(t) for t in TERMINAL_EVENTS)
_TAG = chain.VERSION_TAG


class RowSource(Protocol):
    """Where the rows come from (the database, in one read snapshot)."""

    def batches(self) -> Iterator[list[FastRow]]:
        """Fast rows from pos 1 on, in `pos` order, in batches."""

    def first_gap(self, upto: int) -> Problem | None:
        """A missing position in 1..`upto`, as a problem, or None."""

    def full_rows(self, from_pos: int, limit: int) -> list[Row]:
        """Up to `limit` full rows from `from_pos` on, in order (for checks and diagnosis)."""


encode_canonical = chain.encode_canonical


def canonical(row: Row, pos: int | None = None) -> str:
    """The canonical text of a full row (optionally as if it sat at another `pos`)."""
    p, run_id, seq, type_, step, message, pct, data, attempt, at = row[:10]
    return encode_canonical(
        [
            _TAG,
            p if pos is None else pos,
            run_id,
            seq,
            type_,
            step,
            message,
            None if pct is None else f"{pct:.2f}",
            data,
            attempt,
            at,
        ]
    )


def fast_row(row: Row) -> FastRow:
    """A full row as the hot loop takes it (when SQLite cannot build the text)."""
    try:
        text = canonical(row).encode()
    except (TypeError, ValueError, AttributeError, UnicodeEncodeError):
        text = b""  # fails the fast check, so the row gets the exact one (and is reported)
    return (text, row[10])


def link_at(prev_hash: str, row: Row, pos: int | None = None) -> str | None:
    """The hash `row` should have after `prev_hash`; None when the row cannot be encoded."""
    try:
        return chain.link(prev_hash, canonical(row, pos))
    except (TypeError, ValueError, AttributeError, UnicodeEncodeError):
        return None


class ChainScan:
    """Checks that each row links to the one before it, from pos 1 on.

    After `run`, `events`/`head_pos`/`head_hash` describe the last good row.
    """

    def __init__(self, after: int = 0, prev_hash: str = chain.GENESIS_HASH) -> None:
        self.after = after
        """The scan starts at pos `after + 1`, linking to `prev_hash`: 0 and the genesis
        hash, or the archived prefix (storage/archive/) when positions 1..after are gone."""
        self.events = 0
        self.start_hash = prev_hash
        self.head_hash = prev_hash
        self.rechecked = 0
        """Rows the fast check rejected but the exact one accepted (accelerator mismatch)."""

    @property
    def head_pos(self) -> int:
        return self.after + self.events  # checked without gaps, so the count gives the pos

    def run(self, source: RowSource) -> Problem | None:
        """Check every row; return the first broken link, or None when all rows verify.

        The loop body is the whole cost of a verification, so it does nothing it
        can put off: the row count is taken per batch, and the hash two rows back
        (which only a diagnosis needs) is looked up when one is needed.
        """
        sha256 = hashlib.sha256
        prev = self.head_hash.encode()
        count = self.events
        problem: Problem | None = None
        for batch in source.batches():
            for text, hash_ in batch:
                if sha256(prev + text).hexdigest() != hash_:
                    done = count + next(i for i, row in enumerate(batch) if row[1] is hash_)
                    problem = self._recheck(source, self.after + done + 1, prev.decode())
                    if problem is not None:
                        count = done
                        break
                prev = hash_.encode()
            else:
                count += len(batch)
                continue
            break
        self.events, self.head_hash = count, prev.decode()
        return problem

    def _recheck(self, source: RowSource, pos: int, prev_hash: str) -> Problem | None:
        """The exact check of one row the fast path rejected; a problem if it fails too.

        Rows are counted, not numbered, so before blaming the row, make sure it
        really is the row at `pos`: a gap before it also shows up as a broken link.
        (A row at `pos` that links to the previous row proves there is no gap.)
        """
        rows = source.full_rows(pos, 1)
        row = rows[0] if rows and rows[0][0] == pos else None
        if row is not None and isinstance(row[10], str) and link_at(prev_hash, row) == row[10]:
            self.rechecked += 1
            return None
        gap = source.first_gap(pos)
        if gap is not None:
            return gap
        before = None
        if pos - 1 > self.after:  # the hash two rows back, when it is in the scanned range
            back = source.full_rows(pos - 2, 1) if pos - 2 > self.after else []
            before = back[0][10] if back else self.start_hash
        return diagnose(before, prev_hash, source.full_rows(pos, WINDOW + 1))


def position_problem(prev_pos: int, pos: Any) -> Problem:
    if isinstance(pos, int) and pos > prev_pos + 1:
        first, last = prev_pos + 1, pos - 1
        count = last - first + 1
        span = f"pos {first}" if count == 1 else f"pos {first} to {last} ({count} rows)"
        return Problem(
            MISSING,
            first,
            f"{span} {'is' if first == last else 'are'} gone: the log jumps from"
            f" pos {prev_pos} to pos {pos} (pos is never reused, so rows were deleted)",
        )
    return Problem(
        OUT_OF_ORDER, prev_pos + 1, f"pos {pos!r} comes after pos {prev_pos}: rows are out of order"
    )


def seq_problem(pos: int, run_id: Any, seq: Any, last: int) -> Problem:
    if last < 0:
        detail = (
            f"run {run_id} ended at seq {-last} with its terminal event, yet this row"
            f" continues it with seq {seq}"
        )
    elif isinstance(seq, int) and seq > last + 1:
        missing = f"seq {last + 1}" if seq == last + 2 else f"seq {last + 1} to {seq - 1}"
        detail = f"run {run_id} jumps from seq {last} to seq {seq}: {missing} of this run missing"
    else:
        detail = f"run {run_id} has seq {seq!r} after seq {last}; expected {last + 1}"
    return Problem(SEQ, pos, detail)


def diagnose(before: str | None, prev_hash: str, window: list[Row]) -> Problem:
    """Name what happened at the first row whose link is broken (`window[0]`).

    Each hypothesis is tested by recomputing the hashes the untouched log would
    have had, so a verdict other than `changed` is backed by matching SHA-256s,
    not guessed: rows swapped, a row inserted (later rows renumbered up), a row
    deleted with later rows renumbered down, or plainly a row whose content no
    longer matches its hash.
    """
    if not window:  # the row vanished between two reads of one snapshot: cannot happen
        return Problem(CHANGED, None, "a row could not be read back")
    row = window[0]
    pos, hash_ = row[0], row[10]
    after = window[1] if len(window) > 1 else None

    partner = _swap_partner(prev_hash, window)
    if partner is not None:
        return Problem(
            OUT_OF_ORDER,
            pos,
            f"the rows at pos {pos} and pos {partner} are in each other's place (each one's"
            " hash matches the other position)",
        )
    if before is not None and link_at(before, row, pos - 1) == hash_:
        return Problem(
            INSERTED,
            pos - 1,
            f"the row at pos {pos - 1} was inserted: the row now at pos {pos} was written as"
            f" pos {pos - 1} right after pos {pos - 2} (later rows were renumbered up)",
        )
    if after is not None and link_at(prev_hash, after, pos) == after[10]:
        return Problem(
            INSERTED,
            pos,
            f"the row at pos {pos} was inserted: the row now at pos {after[0]} was written as"
            f" pos {pos} right after pos {pos - 1} (later rows were renumbered up)",
        )
    if after is not None and link_at(hash_, after, after[0] + 1) == after[10]:
        return Problem(
            MISSING,
            pos,
            f"a row was deleted at pos {pos} and the rows after it renumbered down: the row now"
            f" at pos {pos} was written as pos {pos + 1}",
        )
    follows = after is not None and link_at(hash_, after) == after[10]
    why = (
        "the next row still links to its stored hash, so this row's content was edited"
        if follows
        else "its content or its hash was edited (or it was forged)"
    )
    return Problem(CHANGED, pos, f"the row at pos {pos} does not match its hash: {why}")


def _swap_partner(prev_hash: str, window: list[Row]) -> int | None:
    """The pos of the row that `window[0]` exchanged places with, if the hashes prove it.

    Two ways to swap: exchange the rows' `pos` (hashes travel with the rows) or
    exchange their contents (hashes stay put). Both are confirmed from both ends.
    """
    row = window[0]
    pos, hash_ = row[0], row[10]
    for k in range(1, len(window)):
        other = window[k]
        moved = link_at(prev_hash, other, pos)
        if moved is None:
            continue
        if moved == other[10]:  # pos exchanged: `other` was written at `pos`
            before_other = other[10] if k == 1 else window[k - 1][10]
            if link_at(before_other, row, other[0]) == hash_:
                return int(other[0])
        elif moved == hash_:  # contents exchanged: the hash at `pos` is `other`'s
            before_other = hash_ if k == 1 else window[k - 1][10]
            if link_at(before_other, row, other[0]) == other[10]:
                return int(other[0])
    return None
