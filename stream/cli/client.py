"""How the CLI talks to a server: plain requests, and a resuming SSE client for `tail`.

Every way a request can go wrong becomes one `CliError` line with its exit code
(`stream.cli.errors`): a server that does not answer, a refused key, an unknown
run, params that fail validation (each field and why). The stream client
reconnects by itself after a dropped connection, sending `Last-Event-ID`, reports
each attempt so `tail` can show it, and gives up after `give_up_after` seconds
without reaching the server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx

from stream.cli.config import Target
from stream.cli.errors import FAILED, NO_KEY, NOT_FOUND, UNREACHABLE, CliError, unreachable
from stream.sse.parser import SSEParser

TERMINAL = {"completed", "failed", "cancelled"}
RETRYABLE = {408, 429, 500, 502, 503, 504}
"""Answers a restarting server or its proxy gives: worth another attempt, not an error."""


def absolute(url: str, link: str) -> str:
    """A link the server returned (relative unless STEPLOG_PUBLIC_URL is set), made clickable."""
    return urljoin(url.rstrip("/") + "/", link)


def transport_error(target_url: str, exc: Exception) -> CliError:
    """A request that never got an answer, as one line saying what to check."""
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return CliError(f"not an http(s) URL: {target_url!r} (--url or STEPLOG_URL)", 2)
    if isinstance(exc, httpx.TimeoutException):
        return CliError(f"steplog at {target_url} did not answer in time ({exc!r})", UNREACHABLE)
    return unreachable(target_url, _describe(exc) if isinstance(exc, httpx.TransportError) else "")


def problem(response: httpx.Response, target: Target, what: str) -> CliError:
    """A 4xx/5xx answer as the user's problem, named: the field errors, the key, the run."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return CliError(
            f"unexpected answer from {target.url} to {what}: HTTP {response.status_code}"
            " (is --url / STEPLOG_URL a steplog server?)"
        )
    title, detail = body.get("title") or "", body.get("detail") or ""
    status = response.status_code
    if status in (401, 403):
        return CliError(
            f"the server at {target.url} refused the API key from {target.key_source}: {detail}"
            " (is it the key of this server? see `steplog --help` for where keys are looked for)",
            NO_KEY,
        )
    if status == 404:
        return CliError(detail or f"{what}: not found", NOT_FOUND)
    lines = [f"{title}: {detail}" if detail else title]
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            field = ".".join(str(part) for part in error.get("loc") or []) or "(params)"
            lines.append(f"  {field}: {error.get('msg', '')}")
    if body.get("retry_after") or response.headers.get("retry-after"):
        lines.append(f"  retry after {response.headers.get('retry-after', '?')} s")
    return CliError("\n".join(lines), FAILED)


def request(
    target: Target,
    method: str,
    path: str,
    what: str,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """One API call; the JSON answer, or a `CliError` naming what went wrong."""
    try:
        response = httpx.request(
            method,
            f"{target.url}{path}",
            headers={"Authorization": f"Bearer {target.key}", **(headers or {})},
            timeout=30,
            **kwargs,
        )
    except httpx.HTTPError as exc:
        raise transport_error(target.url, exc) from None
    if response.status_code >= 400:
        raise problem(response, target, what)
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        raise CliError(f"unexpected answer from {target.url} to {what}: not JSON") from None
    return body


@dataclass(frozen=True)
class LinkState:
    """What `tail` shows about its connection: *connecting*, *live* or *reconnecting*."""

    state: str
    attempt: int
    last_id: int
    reason: str = ""

    def line(self) -> str:
        if self.state == "live":
            return "live"
        why = f": {self.reason}" if self.reason else ""
        return f"{self.state} (attempt {self.attempt}, last event id {self.last_id}){why}"


async def follow_run(
    target: Target,
    run_id: str,
    after: int,
    on_event: Callable[[dict[str, Any], str], None],
    *,
    on_state: Callable[[LinkState], None] | None = None,
    give_up_after: float = 60.0,
    max_retry_delay: float = 5.0,
) -> str:
    """Follow a run to its end; the terminal event name (`ended` for a run not finished).

    Raises `CliError` for an unknown run or a refused key at once, and after
    `give_up_after` seconds in which the server could not be reached.
    """
    last = after
    delay = 0.2
    attempt = 0
    reason = ""
    reached = time.monotonic()  # when we last heard from the server
    headers = {"Authorization": f"Bearer {target.key}"}
    report = on_state or (lambda state: None)
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=60)) as client:
        while True:
            attempt += 1
            report(LinkState("reconnecting" if reason else "connecting", attempt, last, reason))
            try:
                request_headers = {**headers, "Last-Event-ID": str(last)} if last else headers
                async with client.stream(
                    "GET", f"{target.url}/runs/{run_id}/events", headers=request_headers
                ) as response:
                    if response.status_code == 204:
                        return await _final_status(client, target, run_id)
                    if response.status_code in RETRYABLE:
                        reason = f"HTTP {response.status_code}"
                    elif response.status_code >= 400:
                        await response.aread()
                        raise _stream_refused(response, target, run_id)
                    else:
                        reached = time.monotonic()
                        report(LinkState("live", attempt, last))
                        attempt, delay = 0, 0.2
                        parser = SSEParser()
                        async for chunk in response.aiter_raw():
                            reached = time.monotonic()
                            for event in parser.feed(chunk):
                                last = int(event.id)
                                on_event(json.loads(event.data), event.data)
                                if event.event in TERMINAL:
                                    return event.event
                        reason = "the stream ended"
            except httpx.UnsupportedProtocol as exc:
                raise transport_error(target.url, exc) from None
            except httpx.TransportError as exc:
                reason = _describe(exc)
            if time.monotonic() - reached > give_up_after:
                raise CliError(
                    f"cannot reach steplog at {target.url} for {give_up_after:g} s"
                    f" (attempt {attempt}, last event id {last}: {reason}) — is `steplog serve`"
                    f" running? Resume with `steplog tail {run_id} --from {last}`",
                    UNREACHABLE,
                )
            await asyncio.sleep(delay)  # back-off between reconnects, not synchronisation
            delay = min(delay * 2, max_retry_delay)


def _describe(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "cannot connect"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return "connection lost"


def _stream_refused(response: httpx.Response, target: Target, run_id: str) -> CliError:
    if response.status_code == 404:
        return CliError(f"run {run_id} not found at {target.url}", NOT_FOUND)
    return problem(response, target, f"the stream of run {run_id}")


async def _final_status(client: httpx.AsyncClient, target: Target, run_id: str) -> str:
    """The run ended before we (re)connected with every event: ask how it ended."""
    try:
        response = await client.get(
            f"{target.url}/runs/{run_id}", headers={"Authorization": f"Bearer {target.key}"}
        )
    except httpx.HTTPError as exc:
        raise transport_error(target.url, exc) from None
    if response.status_code >= 400:
        raise problem(response, target, f"run {run_id}")
    status = response.json().get("status")
    return {"succeeded": "completed", "failed": "failed", "cancelled": "cancelled"}.get(
        status, "ended"
    )
