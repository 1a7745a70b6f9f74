"""A run's timeline for `steplog runs show`: every step with start, end, duration, attempt.

Built by folding the run's events in `seq` order, page by page, so a run with
millions of progress events costs one small object per step, not per event.
Read-only, from one snapshot, like the rest of the audit.

Steps pair `step.started` with the `step.completed` / `step.failed` of the
same name and attempt. A step still open when a later attempt starts was
interrupted (its worker lost the lease); one still open when the run ended
was cut short by the ending (e.g. a cancel). A durable step reused from an
earlier attempt has only its `step.completed`, marked `reused`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from storage.audit.model import UnknownRun
from storage.audit.source import AuditSource
from storage.audit.verify import open_source
from storage.model import TERMINAL_EVENTS

PAGE = 5000
_TERMINAL = frozenset(str(t) for t in TERMINAL_EVENTS)
_RUN_LABELS = {
    "run.queued": "queued",
    "run.started": "run started",
    "run.retrying": "run retrying",
    "run.succeeded": "run succeeded",
    "run.failed": "run failed",
    "run.cancelled": "run cancelled",
}


@dataclass(slots=True)
class Entry:
    """One line of the timeline: a step (with an end) or a run-level event (a moment)."""

    kind: str  # "step" or "run"
    name: str
    attempt: int
    start: str | None
    end: str | None = None
    duration_ms: float | None = None
    outcome: str = "running"
    detail: str | None = None
    events: int = 0
    """Progress and log events written inside the step."""


@dataclass(slots=True)
class Timeline:
    """The run record's summary plus its entries in the order they began."""

    run_id: str
    function: str
    status: str
    attempt: int
    max_attempts: int
    events: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    result: Any = None
    error: str | None = None
    entries: list[Entry] = field(default_factory=list)

    @property
    def ending(self) -> Entry | None:
        last = self.entries[-1] if self.entries else None
        return last if last is not None and last.kind == "run" and last.outcome == "ended" else None

    def as_json(self) -> dict[str, Any]:
        body = asdict(self)
        ending = self.ending
        body["ended"] = None if ending is None else {"type": ending.name, "at": ending.start}
        return body

    def lines(self) -> list[str]:
        """A readable table: what `steplog runs show` prints."""
        took = _between(self.started_at or self.created_at, self.finished_at)
        out = [
            f"run {self.run_id} · {self.function} · {self.status} · attempt {self.attempt}"
            f" of {self.max_attempts} · {_count(self.events, 'event')}",
            f"created {self.created_at} · started {self.started_at or '-'}"
            f" · finished {self.finished_at or '-'}"
            + (f" · took {_duration(took)}" if took is not None else ""),
            "",
            f"  {'attempt':<7}  {'step / event':<24}  {'start':<27}  {'end':<27}"
            f"  {'duration':>9}  outcome",
        ]
        for entry in self.entries:
            attempt = str(entry.attempt) if entry.attempt else "-"
            name = entry.name if entry.kind == "step" else f"[{entry.name}]"
            outcome = entry.outcome if entry.kind == "step" else ""
            if entry.kind == "step" and entry.events:
                outcome += f" ({_count(entry.events, 'event')})"
            if entry.detail:
                outcome = f"{outcome}: {entry.detail}" if outcome else entry.detail
            duration = "" if entry.duration_ms is None else _duration(entry.duration_ms / 1000)
            out.append(
                f"  {attempt:<7}  {_clip(name, 24):<24}  {entry.start or '-':<27}"
                f"  {entry.end or '':<27}  {duration:>9}  {_clip(outcome, 120)}"
            )
        out.append("")
        ending = self.ending
        if ending is None:
            out.append(f"not ended: the run is {self.status}")
        else:
            how = self.status
            if self.error:
                how += f", error: {self.error}"
            out.append(f"ended: {how} at {ending.start}")
            if self.result is not None:  # pretty: a profile's fields one per line
                out.append("result:")
                out.extend(json.dumps(self.result, ensure_ascii=False, indent=2).splitlines())
        return out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def run_timeline(url: str | Path, run_id: str) -> Timeline:
    """The timeline of `run_id`, from one read snapshot of the log `url` names."""
    if "\x00" in run_id:  # no run id holds one (and PostgreSQL text cannot)
        raise UnknownRun(f"no run with id {run_id[:64]!r}")
    source = open_source(url)
    try:
        with source.snapshot():
            return _timeline(source, run_id)
    finally:
        source.close()


def _timeline(source: AuditSource, run_id: str) -> Timeline:
    record = source.fetchone(
        "SELECT function, status, attempt, max_attempts, last_seq, created_at, started_at,"
        " finished_at, result, error FROM runs WHERE id = ?",
        (run_id,),
    )
    if record is None:
        raise UnknownRun(f"no run with id {run_id[:64]!r}")
    function, status, attempt, max_attempts, last_seq, created, started, finished = record[:8]
    timeline = Timeline(
        run_id, function, status, attempt, max_attempts, last_seq, created, started, finished,
        None if record[8] is None else json.loads(record[8]), record[9],
    )  # fmt: skip
    folder = _Folder(timeline)
    after = 0
    while rows := source.fetchall(
        "SELECT seq, type, step, message, data, attempt, at FROM events"
        " WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (run_id, after, PAGE),
    ):
        for row in rows:
            folder.add(*row[1:])
        after = rows[-1][0]
    folder.finish()
    return timeline


class _Folder:
    """Turns events into entries, keeping only the steps still open."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.open: dict[tuple[int, str], list[Entry]] = {}

    def add(
        self, type_: str, step: str | None, message: str | None, data: str, attempt: int, at: str
    ) -> None:
        if type_ == "step.started" and step is not None:
            entry = Entry("step", step, attempt, at)
            self.timeline.entries.append(entry)
            self.open.setdefault((attempt, step), []).append(entry)
        elif type_ in ("step.completed", "step.failed") and step is not None:
            self._end_step(type_, step, message, data, attempt, at)
        elif type_ in ("step.progress", "log"):
            stack = self.open.get((attempt, step or ""))
            if stack:
                stack[-1].events += 1
        elif type_ in _RUN_LABELS:
            if type_ == "run.started":
                self._close_open(lambda a: a < attempt, "interrupted", "its attempt lost the lease")
            ended = type_ in _TERMINAL
            if ended:
                why = "the run " + type_.removeprefix("run.") + " first"
                self._close_open(lambda a: True, "interrupted", why)
            self.timeline.entries.append(
                Entry(
                    "run",
                    _RUN_LABELS[type_],
                    attempt,
                    at,
                    outcome="ended" if ended else "",
                    detail=message,
                )
            )

    def _end_step(
        self, type_: str, step: str, message: str | None, data: str, attempt: int, at: str
    ) -> None:
        details = _decode(data)
        stack = self.open.get((attempt, step))
        if stack:
            entry = stack.pop()
        else:  # a reused durable step (or an end without a start): a moment
            entry = Entry("step", step, attempt, at)
            self.timeline.entries.append(entry)
        entry.end = at
        duration = details.get("duration_ms")
        if isinstance(duration, int | float):
            entry.duration_ms = float(duration)
        else:
            entry.duration_ms = _between(entry.start, at)
            entry.duration_ms = None if entry.duration_ms is None else entry.duration_ms * 1000
        if type_ == "step.failed":
            entry.outcome = "failed"
            entry.detail = str(details.get("error") or message or "")
        elif details.get("reused"):
            entry.outcome = f"reused from attempt {details.get('from_attempt')}"
        else:
            entry.outcome = "completed"

    def _close_open(self, which: Any, outcome: str, detail: str) -> None:
        for (attempt, _), stack in self.open.items():
            if which(attempt):
                for entry in stack:
                    entry.outcome, entry.detail = outcome, detail
                stack.clear()

    def finish(self) -> None:
        """Steps still open: running, if the run is still going on their attempt."""
        running = self.timeline.status == "running"
        for (attempt, _), stack in self.open.items():
            for entry in stack:
                if not (running and attempt == self.timeline.attempt):
                    entry.outcome, entry.detail = "interrupted", "it never ended"


def _decode(data: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        first = datetime.fromisoformat(start.replace("Z", "+00:00"))
        last = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (last - first).total_seconds()


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
