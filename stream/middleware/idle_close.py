"""Close a keep-alive connection as soon as its client has closed it.

Hypercorn (0.18) notices the end of the stream when a client closes an idle
keep-alive connection, but its HTTP/1.1 protocol only acts on that when a
request is in flight. Between requests nothing is done, and the connection's
socket (in `CLOSE_WAIT`), its tasks and buffers stay until the keep-alive timer
fires: 75 s here, which must outlast nginx's upstream keep-alive (see
`stream.serving.KEEP_ALIVE_SECONDS`). Clients that open a connection per
request (webhook senders, scripts, health probes) would each leave an open file
descriptor and about 12 KiB behind for that long: at 100 requests/s, 7,500
descriptors, past the usual limit of 1,024.

`install()` makes the protocol tell the server to close the connection when the
client's end arrives with no request in flight, which is what happens anyway
when the timer fires, only 75 s sooner. It wraps one method, checks that it is
there, and is applied once.
"""

from __future__ import annotations

from typing import Any

from hypercorn.events import Closed
from hypercorn.protocol.h11 import H11Protocol

_INSTALLED = "_steplog_closes_idle_on_eof"


def install() -> None:
    """Patch Hypercorn's HTTP/1.1 protocol (idempotent)."""
    if getattr(H11Protocol, _INSTALLED, False):
        return
    original = H11Protocol.handle

    async def handle(self: H11Protocol, event: Any) -> None:
        idle = isinstance(event, Closed) and self.stream is None
        await original(self, event)
        if idle:
            await self.send(Closed())  # the server closes the socket and stops the timer

    handle.__doc__ = original.__doc__
    H11Protocol.handle = handle  # type: ignore[method-assign]
    setattr(H11Protocol, _INSTALLED, True)
