"""RFC 9457 problem responses: every error the API gives is `application/problem+json`."""

from __future__ import annotations

from typing import Any

from quart import Response

from storage.errors import IdempotencyConflict
from storage.jsonenc import dumps

PROBLEM_TYPE = "application/problem+json"


def problem_body(status: int, title: str, detail: str, **extra: Any) -> str:
    """The JSON document of a problem (also sent outside Quart, by
    `stream.middleware.protocol_errors`)."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return dumps(body)


def problem(status: int, title: str, detail: str, **extra: Any) -> Response:
    """A problem response naming what was wrong, e.g. `problem(400, "Bad cursor", "…")`."""
    body = problem_body(status, title, detail, **extra)
    return Response(body, status=status, content_type=PROBLEM_TYPE)


class HTTPProblem(Exception):
    """Raised inside a handler to answer with a problem response."""

    def __init__(self, status: int, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = {}

    def response(self) -> Response:
        response = problem(self.status, self.title, self.detail, **self.extra)
        response.headers.update(self.headers)
        return response


def idempotency_conflict(exc: IdempotencyConflict, header: str, key: str) -> HTTPProblem:
    """The 422 for a key reused by a different request, naming the key as the caller sent
    it (`header`: `webhook-id` or `Idempotency-Key`) and what differs, never the params."""
    if exc.differs == "function":
        detail = (
            f"{header} {key!r} already started a run of {exc.existing_function!r};"
            f" this request is for {exc.function!r}"
        )
    else:
        detail = (
            f"{header} {key!r} already started a run of {exc.function!r} with different"
            " params; a retry must send the same params (use a new key for a new run)"
        )
    return HTTPProblem(
        exc.status,
        exc.title,
        detail,
        reason="idempotency_conflict",
        idempotency_key=key,
        differs=exc.differs,
    )
