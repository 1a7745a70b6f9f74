"""Prometheus metrics: what an operator graphs and alerts on, served at `GET /metrics`.

Each app gets its own `CollectorRegistry` (never the process-global one), so two apps
in one process (tests, the benchmark) cannot collide. Values that already live
somewhere (open streams in the hub, runs by status in the log) are read at scrape
time instead of being mirrored into counters that could drift.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from quart import Blueprint, Response, current_app, request

from storage import Event, EventLog, RunStatus

log = logging.getLogger("steplog.metrics")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
"""Seconds. Group commit acknowledges in about a millisecond; a second means trouble."""

WEBHOOK_REASONS = {
    400: "malformed_body",
    404: "unknown_function",
    413: "too_large",
    422: "invalid_params",
}


class Metrics:
    """Every steplog metric, with one small method per thing that happens."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry or CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.open_streams = Gauge(
            "steplog_open_streams", "SSE responses open now (replaying or live).", registry=registry
        )
        self.streams_refused = Counter(
            "steplog_streams_refused_total",
            "Stream requests refused: server_cap or token_cap (429).",
            ["reason"],
            registry=registry,
        )
        self.streams_closed = Counter(
            "steplog_streams_closed_total",
            "Streams the server ended early so that their clients reconnect:"
            " lifetime (max stream age) or shutdown.",
            ["reason"],
            registry=registry,
        )
        self.dropped_slow = Counter(
            "steplog_subscribers_dropped_slow_total",
            "Streams dropped for being too slow: buffer (fell too far behind) or"
            " write_timeout (socket unwritable too long).",
            ["cause"],
            registry=registry,
        )
        self.connections_aborted = Counter(
            "steplog_connections_aborted_total",
            "Client connections the kernel aborted: sent bytes unacknowledged for"
            " 2 x STEPLOG_WRITE_TIMEOUT + 2 s (TCP_USER_TIMEOUT; set by steplog serve).",
            registry=registry,
        )
        self.request_heads_pending = Gauge(
            "steplog_request_heads_pending",
            "New connections whose first request head has not fully arrived"
            " (over STEPLOG_MAX_PENDING_HEADERS, a new connection is closed at once).",
            registry=registry,
        )
        self.connections_cut = Counter(
            "steplog_connections_cut_total",
            "Connections closed before a request was complete: header_timeout (408"
            " after STEPLOG_HEADER_TIMEOUT) or pending_cap (closed at once).",
            ["reason"],
            registry=registry,
        )
        self.events_appended = Counter(
            "steplog_events_appended_total",
            "Events committed to the log by this process.",
            registry=registry,
        )
        self.append_latency = Histogram(
            "steplog_append_latency_seconds",
            "From an append() call to its commit (group commit included).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.events_replayed = Counter(
            "steplog_events_replayed_total",
            "Events sent from the log to streams catching up (replay), not live.",
            registry=registry,
        )
        self.tail_lag = Histogram(
            "steplog_tail_lag_seconds",
            "From an event's commit to the tail hub handing it to live streams"
            " (the oldest event of each read).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.runs = Gauge(
            "steplog_runs", "Runs in the log by status.", ["status"], registry=registry
        )
        self.webhook_rejections = Counter(
            "steplog_webhook_rejections_total",
            "Webhook deliveries refused, by reason.",
            ["reason"],
            registry=registry,
        )
        for status in RunStatus:  # every series exists from the start, at 0
            self.runs.labels(status.value)
        for reason in ("server_cap", "token_cap"):
            self.streams_refused.labels(reason)
        for reason in ("lifetime", "shutdown"):
            self.streams_closed.labels(reason)
        for cause in ("buffer", "write_timeout"):
            self.dropped_slow.labels(cause)
        for reason in ("header_timeout", "pending_cap"):
            self.connections_cut.labels(reason)

    def track_open_streams(self, count: Callable[[], int]) -> None:
        """Read the open stream count from its owner (the hub) at each scrape."""
        self.open_streams.set_function(count)

    def observe_commit(self, added: Sequence[Event], waits: Sequence[float]) -> None:
        """A commit observer (`EventLog.add_commit_observer`)."""
        self.events_appended.inc(len(added))
        for seconds in waits:
            self.append_latency.observe(seconds)

    def webhook_rejected(self, exc: BaseException) -> None:
        """Count a refused webhook under a reason an operator can act on."""
        self.webhook_rejections.labels(webhook_reason(exc)).inc()

    async def refresh_runs(self, events: EventLog) -> None:
        """Set the runs-by-status gauge from the log (once per scrape).

        A log that cannot answer leaves the last values in place: the scrape still
        succeeds, and `/readyz` is what reports the log as down.
        """
        try:
            found = await events.run_counts()
        except Exception as exc:
            log.warning("counting runs for /metrics failed: %s", exc)
            return
        for status in RunStatus:
            self.runs.labels(status.value).set(found.get(status.value, 0))

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition body and its content type, as the scraper asked (`Accept`)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def webhook_reason(exc: BaseException) -> str:
    """`bad_signature`, `stale_timestamp`, `missing_headers`, `malformed_body`,
    `idempotency_conflict`, ….

    Signature failures are told apart by the verifier's message, so a clock skew at
    the sender (`stale_timestamp`) does not look like an attack (`bad_signature`).
    """
    status = getattr(exc, "status", None) or getattr(exc, "code", None)
    extra = getattr(exc, "extra", None)  # a problem's own reason, when it names one
    if isinstance(extra, dict) and extra.get("reason") == "idempotency_conflict":
        return "idempotency_conflict"
    if status == 401:
        detail = str(getattr(exc, "detail", exc)).lower()
        if "timestamp" in detail:
            return "stale_timestamp"
        if "missing" in detail or "header" in detail:
            return "missing_headers"
        return "bad_signature"
    if not isinstance(status, int) or status >= 500:
        return "server_error"
    return WEBHOOK_REASONS.get(status, "other")


def metrics() -> Metrics:
    """This app's metrics (request context)."""
    found: Metrics = current_app.extensions["steplog.metrics"]
    return found


exposition = Blueprint("metrics", __name__)


@exposition.get("/metrics")
async def scrape() -> Response:
    """Prometheus text format (or OpenMetrics when the scraper asks for it)."""
    found = metrics()
    events = current_app.extensions["steplog"].events
    await found.refresh_runs(events)
    body, content_type = found.render(request.headers.get("Accept"))
    return Response(body, content_type=content_type)
