"""Who may read what: the API key for everything, a run token for one run.

A run token is an HMAC of the run id under a per-log secret, so it needs no
storage, survives restarts, is the same on every instance sharing the log, and
a repeated webhook gets back the same token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from quart import Request

from stream.problems import HTTPProblem

COOKIE = "steplog_key"
"""The API key as the stream view keeps it: HttpOnly, SameSite=Strict."""


def run_token(secret: bytes, run_id: str) -> str:
    digest = hmac.new(secret, f"run:{run_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode("ascii")


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


def require_run_access(request: Request, api_key: str, secret: bytes, run_id: str) -> None:
    """Allow the API key, or this run's token (as `?token=` or a bearer token)."""
    if is_api_key(request.cookies.get(COOKIE), api_key):
        return
    presented = request.args.get("token") or bearer(request)
    if presented is None:
        raise HTTPProblem(401, "Unauthorized", "send the run's token as ?token=… or a bearer token")
    if is_api_key(presented, api_key):
        return
    if not hmac.compare_digest(presented.encode(), run_token(secret, run_id).encode()):
        raise HTTPProblem(403, "Forbidden", "this token does not grant access to this run")
