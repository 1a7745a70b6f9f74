"""Tests for the SSE encoder (stream.sse.encoder) and the WHATWG test parser (stream.sse.parser)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.sse.encoder import EVENT_STREAM_HEADERS, encode_comment, encode_event, encode_retry
from stream.sse.parser import ParsedEvent, SSEParser, parse

# Text that leans on the characters that matter for framing, plus anything else.
_TRICKY = ["\r", "\n", "\x00", " ", ":", "\ufeff", "\u2028", "\u2029", "\x85", "😀"]
text_st = st.text(st.one_of(st.sampled_from(_TRICKY), st.characters(codec="utf-8"))) | st.text()
id_st = st.none() | text_st | st.integers()
event_st = st.none() | text_st


def normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def expected_event_type(event: str | None) -> str:
    cleaned = "" if event is None else event.replace("\r", "").replace("\n", "")
    return cleaned or "message"


def expected_id(id: str | int | None, previous: str = "") -> str:
    if id is None:
        return previous
    return str(id).replace("\r", "").replace("\n", "").replace("\x00", "")


def feed_in_chunks(stream: bytes, cuts: list[int]) -> tuple[SSEParser, list[ParsedEvent]]:
    parser = SSEParser()
    events: list[ParsedEvent] = []
    bounds = [0, *sorted(cuts), len(stream)]
    for start, end in itertools.pairwise(bounds):
        events.extend(parser.feed(stream[start:end]))
    return parser, events


# --- encoder: exact bytes ---------------------------------------------------------------


def test_encode_event_full() -> None:
    assert (
        encode_event('{"a":1}', event="progress", id=3)
        == b'id: 3\nevent: progress\ndata: {"a":1}\n\n'
    )


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"data": "x"}, b"data: x\n\n"),
        ({"data": ""}, b"data: \n\n"),
        ({"data": " x"}, b"data:  x\n\n"),
        ({"data": "a\r\nb\rc\nd"}, b"data: a\ndata: b\ndata: c\ndata: d\n\n"),
        ({"data": "a\n"}, b"data: a\ndata: \n\n"),
        ({"data": "\r\n"}, b"data: \ndata: \n\n"),
        ({"data": "\n\r"}, b"data: \ndata: \ndata: \n\n"),
        ({"data": "é\u2028😀"}, "data: é\u2028😀\n\n".encode()),
        ({"data": "x", "event": "a\r\nb"}, b"event: ab\ndata: x\n\n"),
        ({"data": "x", "event": "\r\n"}, b"data: x\n\n"),
        ({"data": "x", "event": ""}, b"data: x\n\n"),
        ({"data": "x", "event": " e"}, b"event:  e\ndata: x\n\n"),
        ({"data": "x", "id": "1\x002\n"}, b"id: 12\ndata: x\n\n"),
        ({"data": "x", "id": ""}, b"id: \ndata: x\n\n"),
        ({"data": "x", "id": 0}, b"id: 0\ndata: x\n\n"),
        ({"data": "x", "id": -5}, b"id: -5\ndata: x\n\n"),
        ({"data": "x", "id": "abc", "event": "e"}, b"id: abc\nevent: e\ndata: x\n\n"),
    ],
)
def test_encode_event_bytes(kwargs: dict[str, object], expected: bytes) -> None:
    out = encode_event(**kwargs)  # type: ignore[arg-type]
    assert type(out) is bytes
    assert out == expected


def test_encode_event_rejects_lone_surrogate() -> None:
    with pytest.raises(UnicodeEncodeError):
        encode_event("\ud800")


def test_encode_comment() -> None:
    assert encode_comment() == b": ping\n\n"
    assert encode_comment("hello") == b": hello\n\n"
    assert encode_comment("") == b": \n\n"
    assert encode_comment("a\r\nb\rc\nd") == b": a\n: b\n: c\n: d\n\n"


def test_encode_retry() -> None:
    assert encode_retry(3000) == b"retry: 3000\n\n"
    assert encode_retry(0) == b"retry: 0\n\n"
    with pytest.raises(ValueError):
        encode_retry(-1)
    for bad in (True, 1.5, "3000", None):
        with pytest.raises(TypeError):
            encode_retry(bad)  # type: ignore[arg-type]


def test_event_stream_headers() -> None:
    assert EVENT_STREAM_HEADERS == {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    }


def test_typical_output_parses() -> None:
    parser = SSEParser()
    events = parser.feed(
        encode_retry(2500)
        + encode_comment()
        + encode_event('{"a":1}', event="progress", id=3)
        + encode_event("")
        + encode_event("z", id="")
    )
    assert events == [
        ParsedEvent("progress", '{"a":1}', "3"),
        ParsedEvent("message", "", "3"),
        ParsedEvent("message", "z", ""),
    ]
    assert parser.retry == 2500
    assert parser.comments == ["ping"]
    assert parser.last_event_id == ""


# --- encoder: properties against the parser ---------------------------------------------


@given(data=text_st, event=event_st, id=id_st)
def test_encode_event_round_trips(data: str, event: str | None, id: str | int | None) -> None:
    encoded = encode_event(data, event=event, id=id)
    parser = SSEParser()
    assert parser.feed(encoded) == [
        ParsedEvent(expected_event_type(event), normalise_newlines(data), expected_id(id))
    ]
    assert parser.comments == []
    assert parser.retry is None

    # Structure: LF-only line ends, id line then event line then data lines, blank line last.
    assert b"\r" not in encoded
    text = encoded.decode()
    assert text.endswith("\n\n")
    lines = text[:-2].split("\n")
    if id is not None:
        assert lines.pop(0) == f"id: {expected_id(id)}"
    cleaned_event = "" if event is None else event.replace("\r", "").replace("\n", "")
    if cleaned_event:
        assert lines.pop(0) == f"event: {cleaned_event}"
    assert lines
    assert all(line.startswith("data: ") for line in lines)
    assert len(lines) == normalise_newlines(data).count("\n") + 1


@given(text=text_st)
def test_encode_comment_round_trips(text: str) -> None:
    parser = SSEParser()
    assert parser.feed(encode_comment(text)) == []
    assert parser.comments == normalise_newlines(text).split("\n")


@given(ms=st.integers(min_value=0, max_value=2**64))
def test_encode_retry_round_trips(ms: int) -> None:
    parser = SSEParser()
    assert parser.feed(encode_retry(ms)) == []
    assert parser.retry == ms


message_st = st.one_of(
    st.tuples(st.just("event"), text_st, event_st, id_st),
    st.tuples(st.just("comment"), text_st),
    st.tuples(st.just("retry"), st.integers(min_value=0, max_value=10**9)),
)


@given(messages=st.lists(message_st, max_size=20), bom=st.booleans(), draw=st.data())
def test_chunked_stream_matches_whole(
    messages: list[tuple[object, ...]], bom: bool, draw: st.DataObject
) -> None:
    stream = b"\xef\xbb\xbf" if bom else b""
    expected: list[ParsedEvent] = []
    comments: list[str] = []
    retry: int | None = None
    last_id = ""
    for message in messages:
        if message[0] == "event":
            _, data, event, id = message
            stream += encode_event(data, event=event, id=id)  # type: ignore[arg-type]
            last_id = expected_id(id, last_id)  # type: ignore[arg-type]
            expected.append(
                ParsedEvent(expected_event_type(event), normalise_newlines(data), last_id)  # type: ignore[arg-type]
            )
        elif message[0] == "comment":
            stream += encode_comment(message[1])  # type: ignore[arg-type]
            comments += normalise_newlines(message[1]).split("\n")  # type: ignore[arg-type]
        else:
            stream += encode_retry(message[1])  # type: ignore[arg-type]
            retry = message[1]  # type: ignore[assignment]

    assert parse(stream) == expected
    cuts = draw.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=30))
    parser, events = feed_in_chunks(stream, cuts)
    assert events == expected
    assert parser.comments == comments
    assert parser.retry == retry
    assert parser.last_event_id == last_id


@given(stream=st.binary(), draw=st.data())
def test_parser_chunking_is_invisible_for_any_bytes(stream: bytes, draw: st.DataObject) -> None:
    whole = SSEParser()
    whole_events = whole.feed(stream)
    cuts = draw.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=20))
    parser, events = feed_in_chunks(stream, cuts)
    assert events == whole_events
    assert parser.comments == whole.comments
    assert parser.retry == whole.retry
    assert parser.last_event_id == whole.last_event_id


_FRAMING_LINES = st.sampled_from(
    ["data: a", "data:b", "data", "id: 7", "id", "event: e", ": c", "retry: 9", "", "x: y"]
)


@given(
    lines=st.lists(st.tuples(_FRAMING_LINES, st.sampled_from(["\r\n", "\r", "\n"]))),
    draw=st.data(),
)
def test_parser_mixed_line_endings_chunked(
    lines: list[tuple[str, str]], draw: st.DataObject
) -> None:
    lf_stream = "".join(line + "\n" for line, _ in lines).encode()
    text = ""
    for line, end in lines:
        if line == "" and end == "\n" and text.endswith("\r"):
            end = "\r\n"  # CR then LF would be a single CRLF line end, not an empty line
        text += line + end
    stream = text.encode()
    expected = parse(lf_stream)
    cuts = draw.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=20))
    assert feed_in_chunks(stream, cuts)[1] == expected


# --- parser: WHATWG examples and conformance --------------------------------------------


def test_spec_stock_example() -> None:
    assert parse(b"data: YHOO\ndata: +2\ndata: 10\n\n") == [
        ParsedEvent("message", "YHOO\n+2\n10", "")
    ]


def test_spec_test_stream_example() -> None:
    stream = (
        b": test stream\n"
        b"\n"
        b"data: first event\n"
        b"id: 1\n"
        b"\n"
        b"data:second event\n"
        b"id\n"
        b"\n"
        b"data:  third event\n"
    )
    parser = SSEParser()
    # The last block is not followed by a blank line, so the end of the stream drops it.
    assert parser.feed(stream) == [
        ParsedEvent("message", "first event", "1"),
        ParsedEvent("message", "second event", ""),
    ]
    assert parser.comments == ["test stream"]
    assert parser.feed(b"\n") == [ParsedEvent("message", " third event", "")]


def test_spec_empty_data_example() -> None:
    assert parse(b"data\n\ndata\ndata\n\ndata:") == [
        ParsedEvent("message", "", ""),
        ParsedEvent("message", "\n", ""),
    ]


def test_spec_identical_events_example() -> None:
    assert parse(b"data:test\n\ndata: test\n\n") == [
        ParsedEvent("message", "test", ""),
        ParsedEvent("message", "test", ""),
    ]


def test_spec_event_types_example() -> None:
    stream = (
        b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n"
    )
    assert parse(stream) == [
        ParsedEvent("add", "73857293", ""),
        ParsedEvent("remove", "2153", ""),
        ParsedEvent("add", "113411", ""),
    ]


def test_spec_multiline_messages_example() -> None:
    stream = (
        b"data: This is the first message.\n\n"
        b"data: This is the second message, it\n"
        b"data: has two lines.\n\n"
        b"data: This is the third message.\n\n"
    )
    assert [e.data for e in parse(stream)] == [
        "This is the first message.",
        "This is the second message, it\nhas two lines.",
        "This is the third message.",
    ]


def test_id_persists_and_resets() -> None:
    parser = SSEParser()
    assert parser.feed(b"id: 1\ndata: a\n\ndata: b\n\n") == [
        ParsedEvent("message", "a", "1"),
        ParsedEvent("message", "b", "1"),
    ]
    # An id with NUL is ignored; an id on a block without data still updates the last id.
    assert parser.feed(b"id: 2\x003\ndata: c\n\nid: 4\n\n") == [ParsedEvent("message", "c", "1")]
    assert parser.last_event_id == "4"
    assert parser.feed(b"id:\ndata: d\n\n") == [ParsedEvent("message", "d", "")]
    assert parser.last_event_id == ""


def test_event_type_resets_without_data() -> None:
    assert parse(b"event: lost\n\ndata: x\n\n") == [ParsedEvent("message", "x", "")]
    assert parse(b"event: a\nevent: b\ndata: x\n\n") == [ParsedEvent("b", "x", "")]
    assert parse(b"event:\ndata: x\n\n") == [ParsedEvent("message", "x", "")]


def test_field_parsing_details() -> None:
    stream = (
        b"data:  two spaces\n\n"  # only one leading space is removed
        b"data:a:b: c\n\n"  # split on the first colon only
        b"Data: ignored\nfoo: bar\ndata\n\n"  # field names are case-sensitive
        b"data:\xe2\x80\xa8\xc2\x85\x0b\x0c\n\n"  # only CR and LF end lines
        b"data: \xff\xe2\x82\n\n"  # invalid UTF-8 decodes to U+FFFD
    )
    assert [e.data for e in parse(stream)] == [
        " two spaces",
        "a:b: c",
        "",
        "\u2028\x85\x0b\x0c",
        "\ufffd\ufffd",
    ]


def test_comments() -> None:
    parser = SSEParser()
    assert parser.feed(b":\n: ping\n:  two\n:no space\ndata: x\n: mid\n\n") == [
        ParsedEvent("message", "x", "")
    ]
    assert parser.comments == ["", "ping", " two", "no space", "mid"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"1000", 1000),
        (b"0", 0),
        (b"", None),
        (b" 5", 5),  # the one space after the colon is stripped first
        (b"  5", None),
        (b"1e3", None),
        (b"-1", None),
        (b"5 ", None),
        ("\u0661\u0662".encode(), None),  # Arabic-Indic digits are not ASCII digits
        ("\u00b2".encode(), None),
    ],
)
def test_retry(value: bytes, expected: int | None) -> None:
    parser = SSEParser()
    parser.feed(b"retry:" + value + b"\n\n")
    assert parser.retry == expected


def test_retry_keeps_last_valid_value() -> None:
    parser = SSEParser()
    parser.feed(b"retry: 10\nretry: x\n\n")
    assert parser.retry == 10
    parser.feed(b"retry: 20\n")
    assert parser.retry == 20


def test_bom() -> None:
    assert parse(b"\xef\xbb\xbfdata: x\n\n") == [ParsedEvent("message", "x", "")]
    # Only one leading BOM is ignored: a second makes the field name "\ufeffdata".
    assert parse(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\ndata: y\n\n") == [
        ParsedEvent("message", "y", "")
    ]
    # A BOM after the start of the stream is content, not skipped.
    assert parse(b"\n\xef\xbb\xbfdata: x\n\n") == []
    assert parse(b"data: \xef\xbb\xbfx\n\n") == [ParsedEvent("message", "\ufeffx", "")]


@pytest.mark.parametrize(
    "stream",
    [
        b"\xef\xbb\xbfdata: x\n\n",
        b"data: a\r\n\r\ndata: b\r\rdata: c\n\n",
        "data: é€😀\r\n\r\n".encode(),
        b"data: x\r\n\r\n\r\n\r\r\n",
    ],
)
def test_every_split_point(stream: bytes) -> None:
    expected = parse(stream)
    assert expected
    for cut in range(len(stream) + 1):
        assert feed_in_chunks(stream, [cut])[1] == expected
    byte_by_byte = SSEParser()
    assert [e for i in range(len(stream)) for e in byte_by_byte.feed(stream[i : i + 1])] == (
        expected
    )


def test_cr_lf_split_is_one_line_end() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    # The LF completes the CRLF that already ended "data: a"; it is not a blank line.
    assert parser.feed(b"\n") == []
    assert parser.feed(b"") == []
    assert parser.feed(b"\r") == [ParsedEvent("message", "a", "")]


def test_incomplete_event_is_not_dispatched() -> None:
    assert parse(b"data: x\n") == []
    assert parse(b"data: x") == []
    assert parse(b"") == []


def test_parsed_event_is_frozen() -> None:
    event = ParsedEvent("message", "x", "")
    with pytest.raises(AttributeError):
        event.data = "y"  # type: ignore[misc]
