"""`steplog tail` on a `scrape_batch` run: the URL counts, live and in plain lines."""

from __future__ import annotations

from rich.console import Console

from stream.cli.tailview import RunView
from tests.unit.test_tailview import env

COUNTS = {"total": 5, "succeeded": 3, "failed": 1, "reused": 2, "pending": 1}


def test_a_batch_shows_its_url_counts() -> None:
    view = RunView("r")
    view.apply(env(1, "step.started", "url 1/5: example.org/in/ada"))
    progress = env(2, "step.progress", "url 1/5: example.org/in/ada",
                   message="4 of 5 URLs done", data={"batch": COUNTS})  # fmt: skip
    view.apply(progress)
    console = Console(width=120, record=True)
    console.print(view.render())
    assert "URLs: 3 ok, 1 failed, 1 pending of 5 (2 reused)" in console.export_text()
    assert view.line(progress).endswith(
        "4 of 5 URLs done (URLs: 3 ok, 1 failed, 1 pending of 5 (2 reused))"
    )
    assert "URLs:" not in view.line(env(3, "log", message="hello"))
