"""Work to do once a request is over, however it ended: Quart's missing response close hook.

Quart sends a response's body after the view has returned, and closes the body
(`aclose`) only if it got as far as entering it. A client that leaves in between
(its reset arrives while the response's start is being written) gets its request
task cancelled before the body ever runs, so no `finally` inside the body runs
either: whatever the view took for the body, such as a stream's slot, would be
left to the garbage collector, which any lingering reference defeats.

What does always end is the ASGI call of the request: Hypercorn awaits it to the
end, cancelled or not. `RequestEnd` wraps it and, in its `finally`, runs what the
view registered with `at_request_end`. Each callback must be idempotent when it
repeats cleanup the body's own `finally` normally does first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope
from quart import request

log = logging.getLogger("steplog.request_end")

SCOPE_KEY = "steplog.at_request_end"
"""Where the callbacks wait in the request's ASGI scope (the dict Quart's request shares)."""


def at_request_end(callback: Callable[[], object]) -> None:
    """Call `callback` once the current request is over (answered, cut, or never answered).

    Needs `RequestEnd` around the app (installed by `create_app`).
    """
    scope = cast(dict[str, Any], request.scope)
    callbacks: list[Callable[[], object]] = scope.setdefault(SCOPE_KEY, [])
    callbacks.append(callback)


class RequestEnd:
    """ASGI middleware: runs the request's `at_request_end` callbacks when its call returns."""

    def __init__(self, app: ASGIFramework) -> None:
        self.app = app

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        try:
            await self.app(scope, receive, send)  # type: ignore[call-arg]
        finally:
            callbacks: list[Callable[[], object]] = cast(dict[str, Any], scope).pop(SCOPE_KEY, [])
            for callback in callbacks:
                try:
                    callback()
                except Exception:  # one failing callback must not skip the others
                    log.exception("cleanup at the end of a request failed")
