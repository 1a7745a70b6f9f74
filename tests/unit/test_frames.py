"""The replay's fast frame path writes exactly what the general encoder writes."""

from __future__ import annotations

from storage.envelope import envelope
from storage.model import Event
from stream.sse.frames import replay_frames, run_frame
from stream.sse.parser import parse


def make(seq: int, type: str, message: str | None) -> Event:
    return Event(seq, "r" * 28, seq, type, "s", message, 12.5, '{"a":"é\\n"}', 1, "t", "h")


def test_replay_frames_equal_run_frames() -> None:
    events = [
        make(1, "step.progress", "Zoë\nline\r\x00"),
        make(2, "log", None),
        make(3, "run.succeeded", "done"),
        make(4, "run.failed", "x"),
        make(5, "run.cancelled", "\u2028"),
    ]
    fast = replay_frames([(e.seq, e.type, envelope(e)) for e in events])
    assert fast == b"".join(run_frame(e) for e in events)
    parsed = parse(fast)
    assert [p.event for p in parsed] == ["progress", "progress", "completed", "failed", "cancelled"]
    assert [p.id for p in parsed] == ["1", "2", "3", "4", "5"]
