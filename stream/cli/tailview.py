"""`steplog tail`'s live terminal view: the stream view page, drawn with rich.

The same reduction as the page's `runview.js`: steps in order of first
appearance with their state and duration, the overall percentage, and the
current message. It prints one line per event (on a terminal above a live
view redrawn in place, so the step and progress lines stay in the scrollback),
and the result or error once the run ended.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

MARKS = {
    "running": "◐", "done": "✓", "failed": "✗", "reused": "↺", "pending": "○",
    "cancelled": "⊘", "interrupted": "↯",
}  # fmt: skip
STYLES = {
    "running": "blue", "done": "green", "failed": "red", "reused": "green", "pending": "dim",
    "cancelled": "yellow", "interrupted": "yellow", "retrying": "yellow",
}  # fmt: skip
SAID_AT_THE_END = frozenset({"run.failed", "run.cancelled"})
"""Events whose message `ending()` prints once the run ended: their line leaves it out."""
ENDED_STEP = {"run.cancelled": "cancelled", "run.failed": "failed", "run.retrying": "interrupted"}
"""What a step still shown as running becomes when the run (or its attempt) ends."""


@dataclass
class StepRow:
    name: str
    status: str = "pending"
    message: str = ""
    duration_ms: int | None = None


@dataclass
class RunView:
    """What the terminal shows, built from envelopes one at a time."""

    run_id: str
    steps: dict[str, StepRow] = field(default_factory=dict)
    pct: float = 0.0
    message: str = ""
    status: str = "queued"
    attempt: int = 0
    last_seq: int = 0
    connection: str = "connecting"
    result: Any = None
    error: str | None = None
    batch: dict[str, Any] | None = None
    """A batch's URL counts (`scrape_batch` progress events carry them as `data.batch`)."""

    def apply(self, env: dict[str, Any]) -> None:
        if env["seq"] <= self.last_seq:
            return
        self.last_seq = env["seq"]
        self.attempt = env["attempt"]
        if env.get("pct") is not None:
            self.pct = float(env["pct"])
        if env.get("message"):
            self.message = env["message"]
        raw = env.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        kind, name = env["type"], env.get("step")
        if isinstance(data.get("batch"), dict):
            self.batch = data["batch"]
        if kind in ENDED_STEP:  # no step goes on running after its run or attempt ended
            for row in self.steps.values():
                if row.status == "running":
                    row.status = ENDED_STEP[kind]
        if kind == "run.started":
            self.status = "running"
        elif kind == "run.retrying":
            self.status = "retrying"
        elif kind.startswith("step.") and name and kind != "step.progress":
            row = self.steps.setdefault(name, StepRow(name))
            row.message = env.get("message") or ""
            if kind == "step.started":
                row.status = "running"
            else:
                row.status = (
                    "failed"
                    if kind == "step.failed"
                    else "reused"
                    if data.get("reused")
                    else "done"
                )
                row.duration_ms = data.get("duration_ms")
        elif kind in ("run.succeeded", "run.failed", "run.cancelled"):
            self.status = kind.removeprefix("run.")
            self.result = data.get("result")
            error = data.get("error")
            self.error = None if error is None else str(error)

    def render(self) -> RenderableType:
        table = Table.grid(padding=(0, 1))
        for row in self.steps.values():
            duration = "" if row.duration_ms is None else f"{row.duration_ms / 1000:.1f}s"
            table.add_row(
                Text(MARKS.get(row.status, "·"), style=STYLES.get(row.status, "")),
                Text(row.name, style="bold"),
                Text(row.message, overflow="ellipsis", no_wrap=True),
                Text(duration, style="dim"),
            )
        header = Text.assemble(
            ("run ", "dim"), (self.run_id, "bold"), ("  attempt ", "dim"), str(self.attempt),
            ("  ", ""), (self.status, STYLES.get(self.status, "bold")),
            ("  ", ""), (self.connection, "dim" if self.connection == "live" else "yellow"),
        )  # fmt: skip
        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=100, completed=self.pct, width=40), f"{self.pct:5.1f}%")
        parts: list[RenderableType] = [header, table, bar]
        if self.batch is not None:
            parts.append(Text(batch_counts(self.batch), style="bold"))
        # A failed or cancelled run's message is its error, printed once below the view.
        said_below = self.status in ("failed", "cancelled")
        return Group(*parts, Text("" if said_below else self.message, style="italic"))

    def line(self, env: dict[str, Any]) -> str:
        """One line per event, in columns whether or not the event carries a pct.

        A run's failure or cancellation is left to `ending()`, so its error is said once.
        """
        pct = " " * 7 if env.get("pct") is None else f"{env['pct']:5.1f}% "
        step = f"[{env['step']}] " if env.get("step") else ""
        data = env.get("data")
        counts = data.get("batch") if isinstance(data, dict) else None
        tail = f" ({batch_counts(counts)})" if isinstance(counts, dict) else ""
        message = "" if env["type"] in SAID_AT_THE_END else env.get("message") or ""
        return f"{env['seq']:>6} {pct}{env['type']:<15} {step}{message}{tail}".rstrip()

    def ending(self) -> list[str]:
        """What is printed once the run ended: its result, pretty, or its error."""
        if self.status == "succeeded":
            if self.result is None:
                return ["succeeded"]
            return ["result:", json.dumps(self.result, ensure_ascii=False, indent=2)]
        if self.status == "failed":
            return [f"failed: {self.error or self.message}"]
        if self.status == "cancelled":
            return [f"cancelled: {self.message}" if self.message else "cancelled"]
        return []


def batch_counts(counts: dict[str, Any]) -> str:
    """`URLs: 3 ok, 1 failed, 1 pending of 5 (2 reused)`: a batch at a glance."""
    shown = (
        f"URLs: {counts.get('succeeded', 0)} ok, {counts.get('failed', 0)} failed,"
        f" {counts.get('pending', 0)} pending of {counts.get('total', 0)}"
    )
    return shown + (f" ({counts['reused']} reused)" if counts.get("reused") else "")


def make_console() -> Console:
    return Console(highlight=False)
