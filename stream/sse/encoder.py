"""Server-Sent Events wire encoder.

Pure functions that turn values into the bytes of the ``text/event-stream`` format
(https://html.spec.whatwg.org/multipage/server-sent-events.html). The module does no I/O and
knows nothing about Quart so that the framing rules live in one place that can be tested
exhaustively against a WHATWG parser (``stream/sse/parser.py``).

Framing rules the encoder guarantees, whatever the caller passes:

* Every message ends with a blank line, so one message can never bleed into the next.
* ``id`` and ``event`` values lose CR and LF (either would end the field early and let the
  rest of the value be read as a new field); ``id`` values also lose NUL, because a parser
  silently ignores an ``id`` field containing NUL.
* ``data`` is split on CRLF, CR and LF into several ``data:`` lines. A parser joins those
  lines with LF, so CR and CRLF inside ``data`` come back as LF: the format cannot carry a
  bare CR. steplog only ever sends single-line JSON, where this never matters.
* Values follow ``"field: "`` (colon plus one space). A parser strips exactly one space after
  the colon, so a value's own leading spaces survive.

The output is UTF-8 with strict error handling: a string holding a lone surrogate raises
:class:`UnicodeEncodeError` rather than putting invalid UTF-8 on the wire.
"""

from __future__ import annotations

from typing import Final

__all__ = ["EVENT_STREAM_HEADERS", "encode_comment", "encode_event", "encode_retry"]

EVENT_STREAM_HEADERS: Final[dict[str, str]] = {
    "Content-Type": "text/event-stream; charset=utf-8",
    # Intermediaries must not serve a cached copy of a live stream.
    "Cache-Control": "no-cache",
    # nginx buffers proxied responses by default, which would hold events back.
    "X-Accel-Buffering": "no",
}
"""Response headers for an event stream. Shared: copy before modifying."""

# str.translate tables for the slow path only; the fast path is plain ``in`` checks.
_STRIP_CRLF: Final[dict[int, None]] = {ord("\r"): None, ord("\n"): None}
_STRIP_CRLF_NUL: Final[dict[int, None]] = {ord("\r"): None, ord("\n"): None, ord("\0"): None}


def encode_event(data: str, *, event: str | None = None, id: str | int | None = None) -> bytes:
    """Encode one SSE message: ``id:`` line, ``event:`` line, ``data:`` lines, blank line.

    ``event`` is sanitised (CR/LF removed); when nothing is left the line is omitted, which
    a client reads as the default type ``"message"``, exactly as an empty ``event:`` line.

    ``id`` is sanitised (CR/LF/NUL removed) but its line is written whenever ``id`` is not
    None, even when empty: an empty ``id:`` is how a server resets the client's last event
    ID, so it is meaningful rather than noise.

    This runs once per streamed event, so the common case (single-line data, plain
    id/event) is a few substring checks and one f-string.
    """
    if "\n" in data or "\r" in data:
        # Normalise every line ending to LF first so that CRLF yields one break, not two.
        data = data.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\ndata: ")
    if event is None:
        head = ""
    else:
        if "\n" in event or "\r" in event:
            event = event.translate(_STRIP_CRLF)
        head = f"event: {event}\n" if event else ""
    if id is not None:
        # An exact int renders as digits and a sign only, so it needs no sanitising.
        if type(id) is not int:
            id = str(id)
            if "\n" in id or "\r" in id or "\0" in id:
                id = id.translate(_STRIP_CRLF_NUL)
        head = f"id: {id}\n{head}"
    return f"{head}data: {data}\n\n".encode()


def encode_comment(text: str = "ping") -> bytes:
    """Encode a comment block, e.g. ``: ping`` followed by a blank line.

    Clients ignore comments, which makes them the cheap keep-alive that stops proxies and
    load balancers from closing an idle stream. Multi-line text becomes one comment line
    per line so that no CR/LF inside ``text`` can start a real field.
    """
    if "\n" in text or "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\n: ")
    return f": {text}\n\n".encode()


def encode_retry(ms: int) -> bytes:
    """Encode a ``retry:`` field telling the client how long to wait before reconnecting.

    A parser silently ignores a retry value that is not all ASCII digits, so anything
    other than a non-negative int is rejected here instead of being sent and lost.
    """
    if type(ms) is not int:
        if isinstance(ms, bool) or not isinstance(ms, int):
            raise TypeError(f"retry must be an int, not {type(ms).__name__}")
        ms = int(ms)  # an int subclass (e.g. IntEnum) might render as non-digits
    if ms < 0:
        raise ValueError(f"retry must be non-negative, got {ms}")
    return f"retry: {ms}\n\n".encode()
