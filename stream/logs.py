"""Logs an operator can ship: one line per request and per run transition.

`STEPLOG_LOG_FORMAT=json` makes every line (steplog's, Hypercorn's, Quart's) one
JSON object — `ts`, `level`, `logger`, `msg`, then the line's own fields — so a
log pipeline needs no parsing rules. `text` (the default) is the same line for a
terminal, fields as `key=value`.

Secrets never reach a log line: the request line carries the path and never the
query string (where run tokens travel), no header that carries a credential is
logged, and every line goes through `redact` as a second guard (bearer tokens,
`token=…`, API keys, webhook secrets).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope

from storage import Event

request_log = logging.getLogger("steplog.http")
run_log = logging.getLogger("steplog.runs")

_SECRETS = [
    (
        re.compile(r"(?i)\b(token|api[_-]?key|secret|password|signature)=[^&\s\"']+"),
        r"\1=[redacted]",
    ),
    (re.compile(r"(?i)\bbearer\s+[\w.~+/=-]+"), "Bearer [redacted]"),
    (re.compile(r"whsec_[A-Za-z0-9+/=]+"), "whsec_[redacted]"),
    (re.compile(r"slk_[\w-]+"), "slk_[redacted]"),
]

PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
"""Paths polled every few seconds by orchestrators: logged at DEBUG when they succeed."""

RUN_STATUS = {
    "run.queued": "queued",
    "run.started": "running",
    "run.retrying": "retrying",
    "run.succeeded": "succeeded",
    "run.failed": "failed",
    "run.cancelled": "cancelled",
}


def redact(text: str) -> str:
    """Blank out anything shaped like a credential."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def configure(level: str, fmt: str = "text") -> None:
    """Send every logger's lines to stderr in `fmt` (`text` or `json`), redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] | None = getattr(record, "fields", None)
    return fields or {}


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""C0 and C1 control characters, DEL, and the Unicode line and paragraph separators."""
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")

_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    return f"\\x{ord(char):02x}" if ord(char) <= 0xFF else f"\\u{ord(char):04x}"


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with every control character written as a Python-style escape (`\\r`, `\\x1b`).

    A text log line is one record: a request path is percent-decoded and may hold
    CR/LF (which would start a forged line), NUL, or ANSI escapes (which would
    rewrite the terminal showing the log). The JSON format escapes as JSON does.
    `keep_newlines` is for tracebacks, which are several lines by nature.
    """
    pattern = _CONTROL_BUT_NEWLINE if keep_newlines else _CONTROL
    return pattern.sub(_escape_char, text)


class TextFormatter(logging.Formatter):
    """`2026-11-25 22:12:22,558 INFO steplog.http: GET /runs 200 3ms status=200 …`.

    The message and every field are escaped (`escape_controls`), so each record is
    one line whatever a client sent; a traceback keeps its own lines after it.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = escape_controls(super().formatMessage(record))
        fields = _fields(record)
        if fields:
            line += " " + " ".join(
                f"{escape_controls(str(key))}={escape_controls(str(value))}"
                for key, value in fields.items()
            )
        return line

    def formatException(self, ei: Any) -> str:
        return escape_controls(super().formatException(ei), keep_newlines=True)

    def formatStack(self, stack_info: str) -> str:
        return escape_controls(super().formatStack(stack_info), keep_newlines=True)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `ts`, `level`, `logger`, `msg`, the fields, `exc`."""

    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        entry: dict[str, Any] = {
            "ts": at.replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str))


class RequestLog:
    """ASGI middleware: one line per request, written when its response is over.

    Logged at the end so a stream's line carries its real duration and size, and
    `complete: false` when the response was cut (client gone, dropped as slow).
    """

    def __init__(self, app: ASGIFramework) -> None:
        self.app = app

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # type: ignore[call-arg]
            return
        started = time.perf_counter()
        status, sent, complete = 0, 0, False

        async def counting_send(message: Any) -> None:
            nonlocal status, sent, complete
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
                complete = not message.get("more_body", False)
            await send(message)

        try:
            await self.app(scope, receive, counting_send)  # type: ignore[call-arg]
        finally:
            _log_request(cast(dict[str, Any], scope), status, sent, complete, elapsed(started))


def elapsed(started: float) -> float:
    return time.perf_counter() - started


def _log_request(
    scope: dict[str, Any], status: int, sent: int, complete: bool, seconds: float
) -> None:
    path = scope.get("path", "")
    method = scope.get("method", "")
    headers: dict[bytes, bytes] = dict(scope.get("headers", ()))
    fields: dict[str, Any] = {
        "method": method,
        "path": path,  # never the query string: run tokens travel there
        "status": status,
        "bytes": sent,
        "duration_ms": round(seconds * 1000, 1),
        "complete": complete,
        "client": (scope.get("client") or ("", 0))[0],
    }
    for header, key in ((b"x-forwarded-for", "forwarded_for"), (b"x-request-id", "request_id")):
        if header in headers:
            fields[key] = headers[header].decode("latin-1")
    quiet = path in PROBES and 200 <= status < 300
    request_log.log(
        logging.DEBUG if quiet else logging.INFO,
        "%s %s %s %.0fms",
        method,
        path,
        status,
        seconds * 1000,
        extra={"fields": fields},
    )


def log_transitions(added: Sequence[Event], waits: Sequence[float]) -> None:
    """A commit observer: one line per run transition this process committed."""
    for event in added:
        status = RUN_STATUS.get(event.type)
        if status is None:
            continue
        fields = {
            "run_id": event.run_id,
            "event": event.type,
            "status": status,
            "attempt": event.attempt,
            "seq": event.seq,
        }
        if event.message:
            fields["detail"] = event.message[:300]
        level = logging.WARNING if event.type in ("run.failed", "run.retrying") else logging.INFO
        run_log.log(level, "run %s %s", event.run_id, status, extra={"fields": fields})
