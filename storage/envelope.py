"""The event envelope: the JSON object every client reads (the README's contract).

Built by string formatting from a stored row: `data` is already JSON text, so it
is spliced in as is rather than decoded and encoded again, and strings are
quoted with the C encoder (non-ASCII kept as UTF-8, control characters escaped,
so the text is always one line). A backend may build the same object in SQL
(`EventLog.read_run_envelopes`); the contract suite checks both agree.
"""

from __future__ import annotations

import json.encoder

from storage.model import Event

_quote = json.encoder.encode_basestring  # ensure_ascii=False semantics, in C


def _text(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def envelope(event: Event, *, with_pos: bool = False) -> str:
    """The event's JSON envelope (keys documented in the README)."""
    pct = "null" if event.pct is None else repr(event.pct)
    pos = f'"pos":{event.pos},' if with_pos else ""
    return (
        f'{{{pos}"run_id":{_quote(event.run_id)},"seq":{event.seq},"type":{_quote(event.type)},'
        f'"step":{_text(event.step)},"message":{_text(event.message)},"pct":{pct},'
        f'"data":{event.data},"attempt":{event.attempt},"at":{_quote(event.at)}}}'
    )
