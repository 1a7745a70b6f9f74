"""`stream.http.json_depth.too_deep` against the parser it protects.

The guarantee: when the scan passes a body, Python's JSON parser never nests
deeper than the limit on it, valid or not. The parser's real depth is measured
with the standard library's own pure-Python scanner (which delimits strings as
the C one does), instrumented to record how deep it went before it stopped.
"""

from __future__ import annotations

import contextlib
import json
import json.decoder
import json.scanner
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.http import json_depth
from stream.http.json_depth import MAX_JSON_DEPTH, too_deep


class _DepthProbe(json.JSONDecoder):
    """A decoder whose arrays and objects count how deep parsing went."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = self.deepest = 0
        self.parse_array = self._counted(json.decoder.JSONArray)  # type: ignore[attr-defined,assignment]
        self.parse_object = self._counted(json.decoder.JSONObject)  # type: ignore[attr-defined,assignment]
        self.scan_once = json.scanner.py_make_scanner(self)  # type: ignore[attr-defined]

    def _counted(self, parse: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.depth += 1
            self.deepest = max(self.deepest, self.depth)
            try:
                return parse(*args, **kwargs)
            finally:
                self.depth -= 1

        return counted


def parser_depth(body: bytes) -> int:
    """How deep the parser nests on `body` before it finishes or stops at an error."""
    probe = _DepthProbe()
    with contextlib.suppress(ValueError):
        probe.decode(body.decode("utf-8", "replace"))
    return probe.deepest


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab\u2028é'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=40,
)
"""Values whose strings are full of brackets, quotes and backslashes."""

PIECES = [b"[", b"]", b"{", b"}", b'"', b"\\", b"\\\\", b'\\"', b",", b":", b"1", b'"k":', b"\n"]


@settings(max_examples=400, deadline=None)
@given(value=json_values, ascii_only=st.booleans())
def test_valid_json_is_measured_exactly(value: Any, ascii_only: bool) -> None:
    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    depth = parser_depth(body)
    for limit in range(depth + 2):
        assert too_deep(body, limit) == (depth > limit), (body, depth, limit)


@settings(max_examples=600, deadline=None)
@given(
    value=json_values,
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(PIECES)), max_size=4),
    chunk=st.sampled_from([3, 7, 65536]),
)
def test_a_body_the_scan_passes_never_nests_the_parser_deeper(
    value: Any, edits: list[tuple[int, bytes]], chunk: int
) -> None:
    """Broken JSON too (the parser recurses before it meets the error), across chunk edges."""
    body = json.dumps(value).encode()
    for at, piece in edits:
        at %= len(body) + 1
        body = body[:at] + piece + body[at:]
    depth = parser_depth(body)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(json_depth, "_CHUNK", chunk)
        for limit in range(8):
            if not too_deep(body, limit):
                assert depth <= limit, (body, depth, limit)


def test_brackets_inside_strings_do_not_count() -> None:
    assert not too_deep(json.dumps({"a": "[" * 1000, "b": ["]" * 1000]}).encode())
    assert too_deep(json.dumps(["]" * 1000, [[["x"]]]]).encode(), 3)


def test_a_huge_deep_body_is_refused_quickly_without_recursion() -> None:
    started = time.monotonic()
    assert too_deep(b"[" * 10_000_000)
    assert too_deep(b"[]" * 1_000_000 + b"[" * (MAX_JSON_DEPTH + 1))
    assert not too_deep(b'["' + b'\\"[' * 1_000_000 + b'"]')  # escaped quotes, brackets in a string
    assert time.monotonic() - started < 30  # generous under load; a recursion would crash
