"""Event streams are written outside Quart, once the view has answered.

An SSE view does all its checking in Quart (authentication, the cursor, admission,
problem responses), then hands its body over with `hand_off` instead of returning
it as a streaming `Response`. Quart sends the status line and headers and is done
with the request; `StreamHandOff`, the ASGI layer just outside Quart, then writes
the body straight to the server.

Why: a stream lives for minutes or hours, and every event goes to every open
stream. Left inside Quart, each stream keeps Quart's request for its whole life
(the request object, its headers and body events, two tasks and their contexts:
about 7 KiB of the 35 KiB an idle stream cost), and each delivery passes through
Quart's response loop on its way to the socket. Here a stream is one task writing
chunks with `send`, plus one task waiting for the client to leave.

The client leaving (`http.disconnect`) ends the stream: the writing task is
cancelled and its body closed, which runs the body's own `finally` (the slot given
back, the hub left), exactly as when Quart cancelled its request. A disconnect
that arrives while Quart still has the request is seen too (the `receive` Quart
gets is watched), and the stream then never starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, cast

from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope
from quart import request

SCOPE_KEY = "steplog.stream_body"


def hand_off(body: AsyncGenerator[bytes, None]) -> None:
    """Have `body` written after the current view's response head (needs `StreamHandOff`).

    Call it last in the view, just before returning the response without a body:
    a view that fails after it answers with its error and the body is closed unsent.
    """
    cast(dict[str, Any], request.scope)[SCOPE_KEY] = body


class StreamHandOff:
    """ASGI middleware: write a handed-off stream body once the app has answered."""

    def __init__(self, app: ASGIFramework) -> None:
        self.app = app

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # type: ignore[call-arg]
            return
        status = 0
        held_end = False
        gone = False
        entries = cast(dict[str, Any], scope)

        async def app_receive() -> Any:
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
            return message

        async def app_send(message: Any) -> None:
            nonlocal status, held_end
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
            elif (
                kind == "http.response.body"
                and not message.get("more_body", False)
                and status == 200
                and SCOPE_KEY in entries
            ):
                held_end = True  # the handed-off body comes first
                return
            await send(message)

        try:
            await self.app(scope, app_receive, app_send)  # type: ignore[call-arg]
        finally:
            body: AsyncGenerator[bytes, None] | None = entries.pop(SCOPE_KEY, None)
            if body is not None and (gone or not held_end):
                await body.aclose()  # the view failed after handing off, or the client left
                body = None
        if body is not None:
            await _write(body, receive, send)


async def _write(
    body: AsyncGenerator[bytes, None], receive: ASGIReceiveCallable, send: ASGISendCallable
) -> None:
    """Send `body`'s chunks and the end of the response, until the client leaves."""
    task = asyncio.current_task()
    assert task is not None
    left = False
    writing = True

    async def until_disconnect() -> None:
        nonlocal left
        while (await receive())["type"] != "http.disconnect":
            pass
        if writing:
            left = True
            task.cancel()

    watcher = asyncio.ensure_future(until_disconnect())
    try:
        async for chunk in body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        if not left:
            raise  # not ours: the server stopping, or the watchdog dropping a stuck stream
        task.uncancel()  # the client left: the stream is simply over
    finally:
        writing = False
        watcher.cancel()
        await body.aclose()
