"""Who may read what: the API key for everything, a run token for one run until it expires.

Run tokens themselves (their form, expiry and key) are stream/http/tokens.py.
"""

from __future__ import annotations

import hmac

from quart import Request

from stream.http.problems import HTTPProblem
from stream.http.tokens import Verdict, check

COOKIE = "steplog_key"
"""The API key as the stream view keeps it: HttpOnly, SameSite=Strict."""

TOKEN_EXPIRED = "token_expired"
"""The `reason` of the 401 for an expired run token (the stream view says so)."""


def bearer(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def is_api_key(presented: str | None, api_key: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), api_key.encode())


def require_api_key(request: Request, api_key: str) -> None:
    presented = bearer(request) or request.cookies.get(COOKIE)
    if presented is None:
        raise HTTPProblem(401, "Unauthorized", "send 'Authorization: Bearer <STEPLOG_API_KEY>'")
    if not is_api_key(presented, api_key):
        raise HTTPProblem(403, "Forbidden", "the API key is not valid")


def holds_api_key(request: Request, api_key: str) -> bool:
    """The request carries the API key (cookie or bearer), not just a run token."""
    return is_api_key(request.cookies.get(COOKIE), api_key) or is_api_key(bearer(request), api_key)


def require_run_access(
    request: Request, api_key: str, token_key: bytes, run_id: str, now: float
) -> None:
    """Allow the API key, or this run's unexpired token (as `?token=` or a bearer token).

    An expired token is a 401 with `"reason": "token_expired"` (the holder can ask
    for a new link); any other token that does not open this run keeps its 403.
    """
    if is_api_key(request.cookies.get(COOKIE), api_key):
        return
    presented = request.args.get("token") or bearer(request)
    if presented is None:
        raise HTTPProblem(401, "Unauthorized", "send the run's token as ?token=… or a bearer token")
    if is_api_key(presented, api_key):
        return
    verdict = check(token_key, run_id, presented, now)
    if verdict is Verdict.EXPIRED:
        problem = HTTPProblem(
            401,
            "Token expired",
            "this run's link has expired; ask for a new one (GET /runs/{id} with the API key"
            " answers a fresh view_url)",
            reason=TOKEN_EXPIRED,
        )
        problem.headers["WWW-Authenticate"] = (
            'Bearer error="invalid_token", error_description="the run token has expired"'
        )
        raise problem
    if verdict is not Verdict.VALID:
        raise HTTPProblem(403, "Forbidden", "this token does not grant access to this run")
