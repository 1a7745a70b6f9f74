"""A WHATWG-conforming ``text/event-stream`` parser, for steplog's own clients and tests.

Implements "Event stream interpretation" from
https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
so that `steplog tail`, the benchmark and the tests read streams the way a browser's
``EventSource`` would, not the way our own encoder believes it wrote them. Deliberately
independent of ``stream.sse.encoder``.

Use :func:`parse` for a complete body, or :class:`SSEParser` to feed chunks as they arrive
from the network; chunks may be split anywhere, including inside a UTF-8 sequence, inside
the byte order mark, or between the CR and LF of a CRLF.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

__all__ = ["ParsedEvent", "SSEParser", "parse"]

# A line ends with CRLF, a lone LF, or a lone CR. The incremental parser handles a CR at the
# very end of a chunk by ending the line there and dropping a LF that opens the next chunk.
_LINE_END = re.compile(r"\r\n?|\n")


@dataclass(frozen=True, slots=True)
class ParsedEvent:
    """One dispatched event, as ``EventSource`` would deliver it."""

    event: str
    """The event type; ``"message"`` when the stream named none."""
    data: str
    """The data lines joined with LF (one trailing LF removed, as the spec says)."""
    id: str
    """The last event ID string at dispatch time (``MessageEvent.lastEventId``)."""


class SSEParser:
    """Incremental event-stream parser: feed bytes, get the events they completed.

    State after each feed is inspectable: ``comments`` lists every comment line seen (text
    after the colon, one leading space removed, mirroring field values; the spec discards
    comments, tests want to see keep-alives), ``retry`` is the last valid reconnection time
    in milliseconds (None if none seen) and ``last_event_id`` is what a reconnecting client
    would send as ``Last-Event-ID``.

    The end of the stream needs no call: per the spec an event not terminated by a blank
    line is never dispatched, so unfinished input is simply never reported.
    """

    def __init__(self) -> None:
        self.comments: list[str] = []
        self.retry: int | None = None
        self.last_event_id: str = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._at_stream_start = True  # still looking for the optional leading BOM
        self._skip_lf = False  # the previous chunk ended with a CR, which already ended a line
        self._partial: list[str] = []  # pieces of the current, unterminated line
        self._data: list[str] = []  # the spec's data buffer, as the pieces to join
        self._event_type = ""
        self._last_id_buffer = ""

    def feed(self, chunk: bytes) -> list[ParsedEvent]:
        """Consume ``chunk`` and return the events it completed, in stream order."""
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if self._at_stream_start:
            self._at_stream_start = False
            if text[0] == "\ufeff":
                text = text[1:]  # exactly one BOM is ignored; a second is content
                if not text:
                    return []
        if self._skip_lf:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
                if not text:
                    return []
        events: list[ParsedEvent] = []
        start = 0
        for match in _LINE_END.finditer(text):
            line = text[start : match.start()]
            if self._partial:
                self._partial.append(line)
                line = "".join(self._partial)
                self._partial.clear()
            self._process_line(line, events)
            start = match.end()
        if start < len(text):
            self._partial.append(text[start:])
        elif text[-1] == "\r":
            self._skip_lf = True
        return events

    def _process_line(self, line: str, events: list[ParsedEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line[0] == ":":
            self.comments.append(line[2:] if line.startswith(" ", 1) else line[1:])
            return
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event_type = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            if "\0" not in value:
                self._last_id_buffer = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        # Any other field name, and a retry value that is not all ASCII digits, is ignored.

    def _dispatch(self, events: list[ParsedEvent]) -> None:
        self.last_event_id = self._last_id_buffer
        if not self._data:
            # A data buffer that is still the empty string: reset, dispatch nothing.
            self._event_type = ""
            return
        # Appending value + LF per data line and then removing one trailing LF is the same
        # as joining the values with LF.
        data = "\n".join(self._data)
        events.append(ParsedEvent(self._event_type or "message", data, self.last_event_id))
        self._data.clear()
        self._event_type = ""


def parse(stream: bytes) -> list[ParsedEvent]:
    """Parse a complete event-stream body and return the events a client would dispatch."""
    return SSEParser().feed(stream)
