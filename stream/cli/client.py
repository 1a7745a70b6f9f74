"""A resuming SSE client for a run's stream (used by `steplog tail` and the benchmark).

It reconnects by itself after a dropped connection, sending `Last-Event-ID`, and
stops on the terminal event or on 204 (the run ended before we reconnected).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx

from stream.sse.parser import SSEParser

TERMINAL = {"completed", "failed", "cancelled"}


async def follow_run(
    url: str,
    key: str,
    run_id: str,
    after: int,
    on_event: Callable[[dict[str, Any], str], None],
    *,
    max_retry_delay: float = 5.0,
) -> str:
    """Print-as-you-go follow; returns the terminal event name (or `ended` on 204)."""
    last = after
    delay = 0.2
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client:
        while True:
            try:
                request_headers = {**headers, "Last-Event-ID": str(last)} if last else headers
                async with client.stream(
                    "GET", f"{url}/runs/{run_id}/events", headers=request_headers
                ) as response:
                    if response.status_code == 204:
                        return await _final_status(client, url, run_id, headers)
                    if response.status_code >= 400:
                        body = await response.aread()
                        raise RuntimeError(
                            f"{response.status_code}: {body.decode(errors='replace')}"
                        )
                    parser = SSEParser()
                    delay = 0.2
                    async for chunk in response.aiter_raw():
                        for event in parser.feed(chunk):
                            last = int(event.id)
                            on_event(json.loads(event.data), event.data)
                            if event.event in TERMINAL:
                                return event.event
            except (httpx.TransportError, httpx.RemoteProtocolError):
                pass
            await asyncio.sleep(delay)  # back-off between reconnects, not synchronisation
            delay = min(delay * 2, max_retry_delay)


async def _final_status(
    client: httpx.AsyncClient, url: str, run_id: str, headers: dict[str, str]
) -> str:
    response = await client.get(f"{url}/runs/{run_id}", headers=headers)
    status = response.json().get("status")
    return {"succeeded": "completed", "failed": "failed", "cancelled": "cancelled"}.get(
        status, "ended"
    )
