"""`steplog tail`'s view: a step cut off by its run's end is not shown as still running."""

from __future__ import annotations

from typing import Any

from stream.cli.tailview import RunView


def env(seq: int, kind: str, step: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"seq": seq, "type": kind, "step": step, "attempt": 1, "message": None, "pct": None,
            "data": extra.pop("data", {}), **extra}  # fmt: skip


def test_a_cancelled_run_leaves_no_step_running() -> None:
    view = RunView("r")
    for envelope in (
        env(1, "run.queued"),
        env(2, "run.started"),
        env(3, "step.started", "tick"),
        env(4, "run.cancelled", message="cancelled by the API"),
    ):
        view.apply(envelope)
    assert view.steps["tick"].status == "cancelled"
    assert view.ending() == ["cancelled: cancelled by the API"]


def test_a_retried_attempt_interrupts_its_step_and_the_result_is_pretty() -> None:
    view = RunView("r")
    view.apply(env(1, "step.started", "tick"))
    view.apply(env(2, "run.retrying"))
    assert view.steps["tick"].status == "interrupted"
    view.apply(env(3, "step.started", "tick"))
    view.apply(env(4, "step.completed", "tick", data={"duration_ms": 5}))
    view.apply(env(5, "run.succeeded", data={"result": {"name": "Zoë"}}))
    assert view.steps["tick"].status == "done"
    assert view.ending() == ["result:", '{\n  "name": "Zoë"\n}']
