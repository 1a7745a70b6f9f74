"""Event envelopes and their SSE frames, encoded once per event and shared by subscribers.

The envelope is built by string formatting from the stored row: `data` is already
JSON text, so it is spliced in as is rather than decoded and encoded again.
"""

from __future__ import annotations

from storage.jsonenc import dumps
from storage.model import Event, EventType
from stream.sse import encode_event

EVENT_NAMES: dict[str, str] = {
    EventType.RUN_SUCCEEDED: "completed",
    EventType.RUN_FAILED: "failed",
    EventType.RUN_CANCELLED: "cancelled",
}
"""SSE `event:` names: `progress` for every non-terminal event."""


def envelope(event: Event, *, with_pos: bool = False) -> str:
    """The event's JSON envelope (keys documented in the README)."""
    pct = "null" if event.pct is None else repr(event.pct)
    pos = f'"pos":{event.pos},' if with_pos else ""
    return (
        f'{{{pos}"run_id":"{event.run_id}","seq":{event.seq},"type":{dumps(event.type)},'
        f'"step":{dumps(event.step)},"message":{dumps(event.message)},"pct":{pct},'
        f'"data":{event.data},"attempt":{event.attempt},"at":"{event.at}"}}'
    )


def event_name(event: Event) -> str:
    return EVENT_NAMES.get(event.type, "progress")


def run_frame(event: Event) -> bytes:
    """The frame for a run's own stream: `id:` is the per-run `seq`."""
    return encode_event(envelope(event), event=event_name(event), id=event.seq)


def global_frame(event: Event) -> bytes:
    """The frame for `GET /events`: `id:` is the global `pos`."""
    return encode_event(envelope(event, with_pos=True), event=event_name(event), id=event.pos)
