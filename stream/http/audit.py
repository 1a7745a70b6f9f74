"""`GET /audit/verify` and `GET /audit/export`: the audit over HTTP (API key).

Both read the log read-only through `storage.audit` (no SQL here), on
SQLite and PostgreSQL alike. The verification is CPU-bound for seconds on a
big log, so it runs in a worker thread (the event loop keeps serving
streams), one at a time per process so that a burst of requests cannot occupy
every core. The export is streamed: each
page is read in a worker thread and sent before the next is read, so neither
side ever holds more than one page, and a client that goes away stops it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from quart import Blueprint, Response, current_app, request

from storage.audit import Anchor, AuditError, UnknownRun, verify_log
from storage.audit.export import FORMATS, Export, ExportFilter
from storage.jsonenc import dumps
from stream.http.auth import require_api_key
from stream.http.problems import HTTPProblem
from stream.state import state

audit = Blueprint("audit", __name__)


def _log_url() -> str:
    app_state = state()
    require_api_key(request, app_state.api_key)
    return app_state.settings.db


def _verify_lock() -> asyncio.Lock:
    lock: asyncio.Lock = current_app.extensions.setdefault("steplog.audit_lock", asyncio.Lock())
    return lock


@audit.get("/audit/verify")
async def verify() -> Response:
    """The verification report as JSON; `ok` says whether the log verified.

    200 whatever the verdict (the report is the resource); `?anchor=LINE` also
    checks an anchor taken earlier.
    """
    url = _log_url()
    anchor = None
    if "anchor" in request.args:
        try:
            anchor = Anchor.parse(request.args["anchor"])
        except AuditError as exc:
            raise HTTPProblem(400, "Bad anchor", str(exc)) from None
    async with _verify_lock():
        try:
            report = await asyncio.to_thread(verify_log, url, anchor)
        except AuditError as exc:
            raise HTTPProblem(503, "Log unreadable", str(exc)) from None
    return Response(dumps(report.as_json()), content_type="application/json")


@audit.get("/audit/export")
async def export() -> Response:
    """Events as JSONL (`application/jsonl`, verifiable offline) or CSV, streamed."""
    url = _log_url()
    fmt = request.args.get("format", "jsonl")
    try:
        if fmt not in FORMATS:
            raise AuditError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        filters = ExportFilter.build(
            run=request.args.get("run"),
            function=request.args.get("function"),
            since=request.args.get("since"),
            until=request.args.get("until"),
            types=request.args.getlist("type"),
        )
    except AuditError as exc:
        raise HTTPProblem(400, "Bad export request", str(exc)) from None
    try:
        job = await asyncio.to_thread(Export, url, filters, fmt)
    except UnknownRun as exc:
        raise HTTPProblem(404, "Run not found", str(exc)) from None
    except AuditError as exc:
        raise HTTPProblem(503, "Log unreadable", str(exc)) from None
    name = f"steplog-export{'-' + filters.run if filters.run else ''}.{fmt}"
    response = Response(
        _stream(job),
        status=200,
        content_type=job.media_type,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
    response.timeout = None  # a big export outlives Quart's response timeout
    return response


async def _stream(job: Export) -> AsyncIterator[bytes]:
    """Read one page in a thread, send it, repeat; close the export however it ends.

    `Export.close` waits for a page read still running in its thread (a client
    that disconnects cancels us mid-read), so the connection is never closed
    under a read.
    """
    try:
        while (chunk := await asyncio.to_thread(job.next_chunk)) is not None:
            yield chunk
    finally:
        await asyncio.shield(asyncio.to_thread(job.close))
