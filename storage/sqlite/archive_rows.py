"""The SQLite archiver's rows: read once, with SQLite writing the JSON in C.

The query is `archive_fast_rows` in storage/sqlite/queries.sql.

For each row SQLite returns two JSON fragments, `[pos, run_id, seq, type,
step, message]` and `[data, attempt, at]`, plus `run_id`, `seq`, `pct` and
`hash`. Python then only joins bytes: the text the hash covers (the
fragments around `pct` as two decimals, `storage.chain`) and the segment's
line (the same fragments around `pct` as JSON writes a float, then the hash).
Each row's hash is checked against its text, so every string in the line has
been proved to be encoded the way `storage.chain` encodes it (the same bytes
from the same `json_array`), and `pct`, the one value whose text differs, is
written by Python. A line therefore reads back (`json.loads`) to exactly the
stored row, which is what lets the archiver skip decoding the rows and
re-encoding them (storage/archive/chunk.py).

SQLite never decides a verdict: a row whose fast text does not match its hash
is checked again exactly (`chunk_from_rows` over the full rows of the range),
and so is a range SQLite cannot encode (a BLOB in a tampered row).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from storage.archive.chunk import Chunk
from storage.chain import VERSION_TAG

_OPEN = b'["' + VERSION_TAG.encode() + b'",'


def build(rows: list[Any], first: int, last: int, prev_hash: str) -> Chunk | None:
    """The chunk from `archive_fast_rows` rows (storage/sqlite/queries.sql); None when any
    row needs the exact check (the caller then builds it from full rows, which names the
    problem if there is one)."""
    if len(rows) != last - first + 1:
        return None
    sha256 = hashlib.sha256
    prev = prev_hash.encode()
    lines: list[bytes] = []
    add = lines.append
    last_seq: dict[str, int] = {}
    for run_id, seq, pct, hash_, head, tail in rows:
        if pct is None:
            text = b"null"
            value = b"null"
        elif type(pct) is float and math.isfinite(pct):
            text = b'"%.2f"' % pct
            value = float.__repr__(pct).encode()
        else:
            return None
        middle = b"," + tail[1:-1]
        canonical = _OPEN + head[1:-1] + b"," + text + middle + b"]"
        if type(hash_) is not str or sha256(prev + canonical).hexdigest() != hash_:
            return None
        if seq != last_seq.get(run_id, 0) + 1:
            return None
        last_seq[run_id] = seq
        prev = hash_.encode()
        add(head[:-1] + b"," + value + middle + b',"' + prev + b'"]\n')
    return Chunk(
        first_pos=first,
        last_pos=last,
        prev_hash=prev_hash,
        last_hash=prev.decode(),
        runs=list(last_seq),
        first_at="",
        last_at="",
        lines=lines,
    )
