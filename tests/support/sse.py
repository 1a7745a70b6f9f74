"""The one SSE reader the tests use: one connection (`read_stream`) or resuming (`Follower`).

Both read a real socket and parse with the WHATWG parser the project ships
(`stream.sse.parser`), so a test sees exactly what a browser's EventSource would.
`Follower` behaves like EventSource: it honours `retry:`, reconnects with
`Last-Event-ID`, stops on the terminal event or a 204. It remembers the id of
every event as it is parsed, not per connection, because a connection cut
mid-body (an instance SIGKILLed behind nginx) must resume after the last event it
delivered; and it keeps every event's id in arrival order, so a duplicate or a
gap across reconnects is visible (`duplicates`, `gaps`) rather than averaged away.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import httpx

from stream.sse.parser import ParsedEvent, SSEParser

TERMINAL_NAMES = frozenset({"completed", "failed", "cancelled"})
"""The SSE event names that end a run's stream."""

Until = Callable[[list[ParsedEvent], SSEParser], bool]
"""When to hang up: called with the events so far and the parser after every chunk."""


@dataclass
class Received:
    """An event and the wall-clock time (epoch seconds) the client had parsed it."""

    event: ParsedEvent
    at: float

    @property
    def envelope(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.event.data)
        return found


@dataclass
class StreamRead:
    """What one connection to an SSE endpoint delivered."""

    status: int
    headers: httpx.Headers
    raw: bytes = b""
    """The body as read; for a non-200 answer, the whole (unparsed) body."""
    received: list[Received] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry: int | None = None
    ended: bool = False
    """True when the server ended the response (rather than us hanging up)."""

    @property
    def events(self) -> list[ParsedEvent]:
        return [item.event for item in self.received]

    @property
    def envelopes(self) -> list[dict[str, Any]]:
        return [json.loads(item.event.data) for item in self.received]

    @property
    def last_id(self) -> str:
        return self.received[-1].event.id if self.received else ""

    def json(self) -> Any:
        return json.loads(self.raw)


def at_least(count: int) -> Until:
    """Hang up after `count` events."""
    return lambda events, _parser: len(events) >= count


def until_terminal(events: list[ParsedEvent], _parser: SSEParser | None = None) -> bool:
    """Hang up once the run's terminal event arrived."""
    return bool(events) and events[-1].event in TERMINAL_NAMES


def assert_contiguous(envelopes: list[dict[str, Any]], first: int = 1) -> None:
    """Seqs run first, first+1, … with no gap and no duplicate."""
    seqs = [env["seq"] for env in envelopes]
    assert seqs == list(range(first, first + len(seqs))), f"seqs not contiguous: {seqs}"


def _read_body(
    response: httpx.Response,
    into: StreamRead,
    until: Until,
    *,
    decoded: bool,
    on_event: Callable[[ParsedEvent], None] | None = None,
) -> None:
    """Parse `response` into `into` as it arrives, until `until` holds or the server ends it.

    Whatever was parsed stays in `into` even if the connection breaks (the caller
    sees the exception), so a resuming client knows the last event it did get.
    """
    parser = SSEParser()
    body = bytearray()
    chunks = response.iter_bytes() if decoded else response.iter_raw()
    try:
        for chunk in chunks:
            body += chunk
            for event in parser.feed(chunk):
                into.received.append(Received(event, time.time()))
                if on_event is not None:
                    on_event(event)
            into.comments = list(parser.comments)
            if until(into.events, parser):
                return
        into.ended = True
    finally:
        into.raw = bytes(body)
        into.comments = list(parser.comments)
        into.retry = parser.retry


def read_stream(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    until: Until | None = None,
    timeout: float = 15.0,
) -> StreamRead:
    """Open an SSE endpoint once and read it until `until` holds, then hang up.

    Without `until`, read until the server ends the response. Either way the read
    fails after `timeout` seconds. A non-200 answer is returned with its body in
    `raw`, unparsed. `params` are added to any query `url` already has (a stream
    URL's `?token=` is kept). The bytes are read as sent (no decompression).
    """
    deadline = time.monotonic() + timeout

    def until_or_deadline(events: list[ParsedEvent], parser: SSEParser) -> bool:
        if until is not None and until(events, parser):
            return True
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"stream {url} did not reach its condition within {timeout}s;"
                f" read {len(events)} events, {len(parser.comments)} comments"
            )
        return False

    full_url = httpx.URL(url).copy_merge_params(params or {})
    with (
        httpx.Client(timeout=httpx.Timeout(5.0, read=timeout), verify=False) as http,
        http.stream("GET", full_url, headers=headers) as response,
    ):
        result = StreamRead(response.status_code, response.headers)
        if response.status_code != 200:
            result.raw = response.read()
            return result
        try:
            _read_body(response, result, until_or_deadline, decoded=False)
        except httpx.ReadTimeout:
            raise AssertionError(
                f"stream {url} went silent for {timeout}s after {len(result.received)} events"
            ) from None
    if result.ended and until is not None:
        raise AssertionError(
            f"stream {url} ended before its condition held; read {len(result.received)} events"
        )
    return result


class Follower:
    """A resuming SSE client on a thread, like EventSource (see the module docstring).

    `connections` keeps every response (events with receipt times, comments, how it
    ended); `errors` the connections that failed. Bodies are decoded, should a
    proxy compress them.
    """

    def __init__(
        self,
        url: str,
        *,
        deadline: float = 60.0,
        headers: dict[str, str] | None = None,
        read_timeout: float = 30.0,
    ) -> None:
        self.url = url
        self.headers = headers or {}
        self.deadline = time.monotonic() + deadline
        self.read_timeout = read_timeout
        self.connections: list[StreamRead] = []
        self.errors: list[str] = []
        self.last_id = ""
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Follower:
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the client did not finish: {self.summary()}"

    @property
    def received(self) -> list[Received]:
        return [item for conn in list(self.connections) for item in conn.received]

    @property
    def events(self) -> list[ParsedEvent]:
        return [item.event for item in self.received]

    @property
    def envelopes(self) -> list[dict[str, Any]]:
        return [item.envelope for item in self.received]

    @property
    def ids(self) -> list[str]:
        """Every event's id in arrival order, across all connections."""
        return [item.event.id for item in self.received]

    @property
    def duplicates(self) -> list[str]:
        """Ids delivered more than once (a resume that went back too far)."""
        return [event_id for event_id, seen in Counter(self.ids).items() if seen > 1]

    @property
    def gaps(self) -> list[tuple[int, int]]:
        """(last id before, first id after) wherever numeric ids skip (a resume too far ahead)."""
        numbers = [int(event_id) for event_id in self.ids if event_id.isdigit()]
        return [(a, b) for a, b in pairwise(numbers) if b > a + 1]

    def summary(self) -> str:
        return (
            "; ".join(
                f"#{i} {c.status}: {len(c.received)} events, comments {c.comments[-2:]}"
                for i, c in enumerate(self.connections)
            )
            + (f"; duplicates {self.duplicates[:5]}" if self.duplicates else "")
            + (f"; gaps {self.gaps[:5]}" if self.gaps else "")
            + (f"; errors {self.errors[-3:]}" if self.errors else "")
        )

    def _remember(self, event: ParsedEvent) -> None:
        self.last_id = event.id

    def _run(self) -> None:
        retry = 0.2
        try:
            while time.monotonic() < self.deadline:
                headers = dict(self.headers)
                if self.last_id:
                    headers["Last-Event-ID"] = self.last_id
                try:
                    finished, retry = self._connect(headers, retry)
                except httpx.TransportError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    finished = False
                if finished:
                    return
                time.sleep(retry)  # EventSource waits `retry` before reconnecting
        finally:
            self.done.set()

    def _connect(self, headers: dict[str, str], retry: float) -> tuple[bool, float]:
        """One connection; returns (whether the stream is over, the retry to use next)."""
        timeout = httpx.Timeout(5.0, read=self.read_timeout)
        with (
            httpx.Client(timeout=timeout, verify=False) as http,
            http.stream("GET", self.url, headers=headers) as response,
        ):
            conn = StreamRead(response.status_code, response.headers)
            self.connections.append(conn)
            if response.status_code != 200:
                conn.raw = response.read()
                if response.status_code != 204:
                    self.errors.append(f"status {response.status_code}: {conn.raw[:200]!r}")
                return response.status_code == 204, retry
            _read_body(response, conn, until_terminal, decoded=True, on_event=self._remember)
        return until_terminal(conn.events), retry if conn.retry is None else conn.retry / 1000
