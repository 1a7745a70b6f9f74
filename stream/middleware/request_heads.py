"""Give every request head a deadline, and cap how many may be arriving at once.

A client can hold a connection by sending its request head a byte at a time, or
nothing at all (slowloris). Hypercorn (0.18) waits for such a head until its
keep-alive timer fires (75 s here, see `stream.serving.KEEP_ALIVE_SECONDS`), and
takes any number of them: 500 such clients held 500 descriptors all along.
Hypercorn's `read_timeout` is no cure: it bounds each read of the socket, so a
trickle of bytes resets it, and it would cut every SSE stream, whose client sends
nothing while it listens.

`install()` adapts Hypercorn's HTTP/1.1 protocol:

- A head is due `STEPLOG_HEADER_TIMEOUT` seconds after its connection was
  accepted, or, for the next request on a kept-alive connection, after the
  first of its bytes is read (once the previous response is done, if it was
  pipelined). One that is not complete by then is answered `408` problem+json
  and the connection is closed. Once the head is complete nothing here applies: a
  body has its own deadline (`STEPLOG_BODY_TIMEOUT`, in the app), and a response
  or stream being written has none of these.
- A new connection is pending until its first head is complete. One accepted
  while `STEPLOG_MAX_PENDING_HEADERS` are pending is closed at once, before
  anything is read and without an answer: a client takes that for a network
  error and retries (EventSource reconnects, nginx tries its next upstream),
  where a `503` would end an EventSource for good. Kept-alive connections are
  neither counted nor refused (nginx's upstream pool is made of those): each
  passed the cap when it was new, and its next head still has the deadline.

It wraps three methods of `H11Protocol`, checks that they are there, and is
applied once; the limits and metrics are those of the latest `install()`. An
HTTP/2 connection (prior knowledge or an `h2c` upgrade, which nothing here
uses: nginx speaks HTTP/1.1 to the app) has no head deadline.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import h11
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol.h11 import H11Protocol

from storage.jsonenc import dumps
from stream.http.metrics import Metrics
from stream.http.problems import PROBLEM_TYPE
from stream.middleware import idle_close
from stream.settings import Settings

log = logging.getLogger("steplog.serve")

_INSTALLED = "_steplog_limits_request_heads"
_HEAD = "_steplog_request_head"


@dataclass
class _Limits:
    """This process's limits (Hypercorn runs one app per process), and how many new
    connections are pending."""

    timeout: float = 10.0
    max_pending: int = 1024
    metrics: Metrics | None = None
    pending: int = 0


_limits = _Limits()
_closing: set[asyncio.Task[None]] = set()
"""The 408-and-close tasks under way (the loop keeps only weak references to tasks)."""


def pending() -> int:
    """New connections whose first request head is not complete yet, in this process."""
    return _limits.pending


def install(settings: Settings, metrics: Metrics | None = None) -> None:
    """Apply `settings`' head deadline and cap to Hypercorn's HTTP/1.1 protocol."""
    _limits.timeout = settings.header_timeout
    _limits.max_pending = settings.max_pending_headers
    _limits.metrics = metrics
    if metrics is not None:
        metrics.request_heads_pending.set_function(pending)
    # A connection refused in `initiate` reaches EOF with no request in flight:
    # idle_close then stops its keep-alive timer, which would otherwise hold it 75 s.
    idle_close.install()
    if getattr(H11Protocol, _INSTALLED, False):
        return
    for name in ("initiate", "handle", "_check_protocol"):
        if not callable(getattr(H11Protocol, name, None)):
            raise RuntimeError(f"Hypercorn's H11Protocol has no {name}(): see {__name__}")
    initiate, handle, check_protocol = (
        H11Protocol.initiate,
        H11Protocol.handle,
        H11Protocol._check_protocol,
    )

    async def initiate_with_deadline(self: H11Protocol) -> None:
        await initiate(self)
        head = _Head(self)
        setattr(self, _HEAD, head)
        if _limits.pending >= _limits.max_pending:
            head.closed = True
            _count("pending_cap")
            log.debug("%d request heads pending: closing a new connection", _limits.pending)
            await self.send(Closed())
        else:
            head.start(counted=True)

    async def handle_with_deadline(self: H11Protocol, event: Event) -> None:
        head: _Head | None = getattr(self, _HEAD, None)
        if head is None:
            await handle(self, event)
        elif isinstance(event, RawData):
            if head.closed:
                return  # bytes read before the close took effect: not a request
            # Returns when it needs more bytes: a response it started has ended (or
            # a body is arriving, and then `stream` is set).
            await handle(self, event)
            if self.stream is None and self.connection.trailing_data[0]:
                head.start(counted=False)  # part of a next head: it is due too
        else:
            if isinstance(event, Closed):
                head.stop()
            await handle(self, event)

    async def check_protocol_when_complete(self: H11Protocol, event: h11.Request) -> None:
        # Hypercorn calls this as soon as a head is complete, before it makes a
        # stream of it (or switches to HTTP/2).
        head: _Head | None = getattr(self, _HEAD, None)
        if head is not None:
            head.stop()
        await check_protocol(self, event)

    initiate_with_deadline.__doc__ = initiate.__doc__
    handle_with_deadline.__doc__ = handle.__doc__
    H11Protocol.initiate = initiate_with_deadline  # type: ignore[method-assign]
    H11Protocol.handle = handle_with_deadline  # type: ignore[method-assign]
    H11Protocol._check_protocol = check_protocol_when_complete  # type: ignore[method-assign]
    setattr(H11Protocol, _INSTALLED, True)


class _Head:
    """The request head one connection is waiting for: its deadline and, on a new
    connection, its place in the pending count. A timer handle, not a task: the
    connection's task group need not wait for it, and the place is given back when
    the timer fires even if the connection ended without telling the protocol
    (cancelled at shutdown)."""

    def __init__(self, protocol: H11Protocol) -> None:
        self.protocol = protocol
        self.deadline: asyncio.TimerHandle | None = None
        self.counted = False
        self.closed = False

    def start(self, *, counted: bool) -> None:
        if self.deadline is None and not self.closed:
            self.counted = counted
            _limits.pending += counted
            loop = asyncio.get_running_loop()
            self.deadline = loop.call_later(_limits.timeout, self._expired)

    def stop(self) -> None:
        """The head is complete, or the connection closed: no deadline, no place."""
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
            _limits.pending -= self.counted
            self.counted = False

    def _expired(self) -> None:
        self.stop()
        self.closed = True
        _count("header_timeout")
        log.debug("a request head took over %gs: 408, closing", _limits.timeout)
        task = asyncio.get_running_loop().create_task(_answer_408_and_close(self.protocol))
        _closing.add(task)
        task.add_done_callback(_closing.discard)


async def _answer_408_and_close(protocol: H11Protocol) -> None:
    body = dumps(
        {
            "type": "about:blank",
            "title": "Request Timeout",
            "status": 408,
            "detail": f"the request head did not arrive within {_limits.timeout:g} s",
        }
    ).encode()
    headers = [
        (b"content-type", PROBLEM_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *protocol.config.response_headers("h11"),
    ]
    events = (
        h11.Response(status_code=408, reason=b"Request Timeout", headers=headers),
        h11.Data(data=body),
        h11.EndOfMessage(),
    )
    try:
        data = b"".join(protocol.connection.send(event) or b"" for event in events)
    except h11.LocalProtocolError:  # not in a state to answer: just close
        data = b""
    if data:
        await protocol.send(RawData(data=data))
    await protocol.send(Closed())


def _count(reason: str) -> None:
    if _limits.metrics is not None:
        _limits.metrics.connections_cut.labels(reason).inc()
