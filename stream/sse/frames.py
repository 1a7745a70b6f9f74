"""Event envelopes and their SSE frames, encoded once per event and shared by subscribers.

The envelope is built by string formatting from the stored row: `data` is already
JSON text, so it is spliced in as is rather than decoded and encoded again.
"""

from __future__ import annotations

from storage.envelope import envelope
from storage.model import Event, EventType
from stream.sse.encoder import encode_event

EVENT_NAMES: dict[str, str] = {
    EventType.RUN_SUCCEEDED: "completed",
    EventType.RUN_FAILED: "failed",
    EventType.RUN_CANCELLED: "cancelled",
}
"""SSE `event:` names: `progress` for every non-terminal event."""


def event_name(event: Event) -> str:
    return EVENT_NAMES.get(event.type, "progress")


def run_frame(event: Event) -> bytes:
    """The frame for a run's own stream: `id:` is the per-run `seq`."""
    return encode_event(envelope(event), event=event_name(event), id=event.seq)


def replay_frames(envelopes: list[tuple[int, str, str]]) -> bytes:
    """Frames for (seq, type, envelope) rows, as one chunk (the replay's hot loop).

    An envelope is one line of JSON and a seq is digits, so the encoder's checks
    for line breaks can be skipped here; `tests/unit/test_frames.py` holds this
    equal to `run_frame`.
    """
    names = EVENT_NAMES
    return "".join(
        [f"id: {seq}\nevent: {names.get(kind, 'progress')}\ndata: {env}\n\n"
         for seq, kind, env in envelopes]
    ).encode()  # fmt: skip


def global_frame(event: Event) -> bytes:
    """The frame for `GET /events`: `id:` is the global `pos`."""
    return encode_event(envelope(event, with_pos=True), event=event_name(event), id=event.pos)
