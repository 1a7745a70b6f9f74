"""The hash chain over the event log: pure functions, shared by every backend.

Each event's hash is SHA-256 over the previous event's hash followed by the
canonical encoding of the event, so changing, removing, inserting or reordering
any row changes every hash after it. The canonical encoding is deliberately
simple so another program can recompute it (the README documents it):

    canonical = JSON array, no whitespace, UTF-8, keys in this fixed order:
        ["steplog.v1", pos, run_id, seq, type, step, message, pct, data, attempt, at]
    where pct is a string with two decimals (or null) and data is the event's
    JSON text as a string (exactly the stored bytes, never re-encoded)
    hash = sha256_hex(prev_hash_hex + canonical); the first prev_hash is 64 "0"s.
"""

from __future__ import annotations

import hashlib
import json

from storage.jsonenc import c_encoder

GENESIS_HASH = "0" * 64
VERSION_TAG = "steplog.v1"

_enc = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
encode_canonical = c_encoder(default=_enc.default, allow_nan=False) or _enc.encode
"""The canonical text of a row's value list: the C encoder (every append hashes a row)
with exactly `_enc`'s settings, so the text is the same."""


def canonical_pct(pct: float | None) -> str | None:
    """Fixed-format pct so that every language hashes the same bytes."""
    return None if pct is None else f"{pct:.2f}"


def canonical_row(
    pos: int,
    run_id: str,
    seq: int,
    type: str,
    step: str | None,
    message: str | None,
    pct: float | None,
    data: str,
    attempt: int,
    at: str,
) -> str:
    """The exact text a row's hash covers."""
    return encode_canonical(
        [VERSION_TAG, pos, run_id, seq, type, step, message, canonical_pct(pct), data, attempt, at]
    )


def link(prev_hash: str, canonical: str) -> str:
    """The hash of a row given the previous row's hash."""
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()
