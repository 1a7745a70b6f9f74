"""Whatever Python value a function hands the log, a browser can read what is sent.

A property test over the path an append takes, without a database: the checks
on the caller's side (storage/writer/validate.py), the numbering and hashing
(storage/numbering.py) and the SSE frames (stream/sse/frames.py). Every value is
either refused with an `InvalidEvent` that names the field and prints, or
every `data:` line of its frames is JSON that a strict parser (JavaScript's
`JSON.parse`) reads, holding what `JSON.stringify` would have written, and
the hash covers exactly what is stored.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_kind
from hypothesis import strategies as st

from storage import chain
from storage.envelope import envelope
from storage.errors import InvalidEvent
from storage.jsonenc import dumps
from storage.model import NewEvent, RunStatus
from storage.numbering import Numbering, RunState
from storage.writer.validate import event_data
from stream.sse.frames import global_frame, replay_frames, run_frame
from stream.sse.parser import parse
from tests.jsonstrict import strict_loads

RUN = "r" * 28
SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]
INT_DIGITS = sys.get_int_max_str_digits()


class Custom:
    """An object JSON knows nothing of: `default=str` writes its text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


class NoText:
    """An object whose `str` fails."""

    def __str__(self) -> str:
        raise RuntimeError("no text \udcff here")


# Joined from characters: `st.text` never draws a lone surrogate, whatever its alphabet.
odd_texts = st.lists(st.characters() | st.sampled_from(SURROGATES), max_size=8).map("".join)
texts = st.text(max_size=12) | odd_texts
floats = st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308])
# Ints too long to print are built by `map`: hypothesis cannot even show them as a constant.
ints = (
    st.integers()
    | st.sampled_from([2**64, -(2**200)])
    | st.sampled_from([1, -1]).map(lambda sign: sign * 10**INT_DIGITS)
)
leaves = (
    st.none()
    | st.booleans()
    | ints
    | floats
    | st.sampled_from([math.nan, math.inf, -math.inf])
    | texts
    | st.binary(max_size=8)
    | st.datetimes()
    | st.decimals(allow_nan=True, allow_infinity=True)
    | st.frozensets(st.integers() | floats, max_size=3)
    | st.builds(Custom, texts)
    | st.just(NoText())
)
keys = texts | st.integers() | floats | st.none() | st.booleans() | st.tuples(st.integers())
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(keys, inner, max_size=4)
    ),
    max_leaves=16,
)


# -- what JSON.stringify would make of a value, and what must be refused ----------------------


def unencodable(text: str) -> bool:
    return any("\ud800" <= char <= "\udfff" for char in text)


def refused(value: Any) -> bool:
    """The oracle: text UTF-8 cannot encode anywhere, an int too long to print, a str()
    that fails."""
    if isinstance(value, str):
        return unencodable(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return False
    if isinstance(value, int):
        return abs(value) >= 10**INT_DIGITS
    if isinstance(value, dict):
        return any(refused(k) or refused(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(refused(item) for item in value)
    try:
        return unencodable(str(value))
    except Exception:
        return True


def stringified(value: Any) -> Any:
    """`value` as `JSON.parse(JSON.stringify(value))` gives it back (with `default=str`)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str | int) or value is None:
        return value
    if isinstance(value, dict):
        return {key_text(k): stringified(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [stringified(item) for item in value]
    return str(value)


def non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(non_finite(k) or non_finite(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(non_finite(item) for item in value)
    return False


def key_text(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool):
        return json.dumps(key)
    if isinstance(key, float):
        if math.isnan(key):
            return "NaN"
        return (
            float.__repr__(key) if math.isfinite(key) else ("Infinity" if key > 0 else "-Infinity")
        )
    if isinstance(key, int):
        return str(key)
    return str(key)


# -- the properties ---------------------------------------------------------------------------

PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(
    data=values,
    message=st.none() | st.text(max_size=12) | texts,
    step=st.none() | texts,
    pct=st.none() | st.floats(0, 100) | floats | st.integers(-(10**400), 10**400) | st.none(),
    terminal=st.booleans(),
)
def test_any_value_is_refused_clearly_or_sent_as_strict_json(
    data: Any, message: str | None, step: str | None, pct: float | None, terminal: bool
) -> None:
    if terminal:
        new = NewEvent(RUN, "run.succeeded", 1, step, message, pct, {"result": data})
    else:
        new = NewEvent(RUN, "log", 1, step, message, pct, data)
    bad_pct = pct is not None and not _finite(pct)
    should_refuse = refused(data) or refused(message) or refused(step) or bad_pct
    try:
        encoded = event_data(new)
    except InvalidEvent as exc:
        text = str(exc)
        field = text.split()[0].split("[")[0]
        note_kind(f"refused: {field}, {'surrogate' if 'surrogate' in text else 'other'}")
        assert should_refuse, f"refused without cause: {text}"
        assert not unencodable(text) and text.encode("utf-8")
        assert text.startswith(("data", "message", "step", "pct")), text
        return
    assert not should_refuse, "accepted what cannot be written"
    note_kind("accepted, NaN or Infinity inside" if non_finite(new.data) else "accepted")

    view = Numbering(0.0)
    view.runs[RUN] = RunState(1, RunStatus.RUNNING, 0)
    event = view.add_event(new, encoded)
    assert event.hash == chain.link(chain.GENESIS_HASH, chain.canonical_row(*event[:10]))

    frames = run_frame(event) + global_frame(event)
    frames += replay_frames([(event.seq, event.type, envelope(event))])
    parsed = parse(frames)
    assert len(parsed) == 3
    for frame in parsed:
        sent = strict_loads(frame.data)
        assert (sent["message"], sent["step"]) == (message, step)
        assert sent["data"] == stringified(new.data)
    if terminal:
        [(_, _, ending)] = list(view.changed_runs())
        assert ending is not None and ending[1] is not None
        assert strict_loads(ending[1]) == stringified(data)


def _finite(pct: float) -> bool:
    try:
        return math.isfinite(pct)
    except OverflowError:
        return False


plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=16,
)


@PROPERTY
@given(plain_values)
def test_values_json_can_hold_are_written_as_before(value: Any) -> None:
    """The fast path is the encoder it always was: the same text, byte for byte."""
    assert dumps(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def test_non_finite_numbers_go_through_an_object_written_as_text() -> None:
    """`default=str` writes an object's text; a NaN inside that text is only text."""
    text = dumps({"d": Decimal("NaN"), "set": {math.nan}, "x": [math.inf]})
    assert strict_loads(text) == {"d": "NaN", "set": "{nan}", "x": [None]}


def test_a_value_that_contains_itself_is_refused() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    make: Callable[[], Any] = lambda: event_data(NewEvent(RUN, "log", 1, data=loop))  # noqa: E731
    try:
        make()
    except InvalidEvent as exc:
        assert str(exc).startswith("data cannot be encoded as JSON: ValueError: Circular")
    else:
        raise AssertionError("a value containing itself was accepted")
