"""What `steplog tail` draws on a terminal and prints line by line, as a person reads it."""

from __future__ import annotations

from pathlib import Path

from stream.cli import errors
from tests.conftest import ServerFactory
from tests.server.cli import error_lines, steplog, user_env
from tests.support.launcher import ServerProcess, free_port

TERMINAL = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "100"}
"""Makes rich treat the captured stdout as a terminal: `tail` draws its live view."""


def test_nothing_is_drawn_for_an_unknown_run(server: ServerProcess, tmp_path: Path) -> None:
    env = user_env(tmp_path / "config", STEPLOG_API_KEY=server.api_key, STEPLOG_URL=server.url,
                   **TERMINAL)  # fmt: skip
    done = steplog("tail", "01a2nope", env=env)
    assert done.returncode == errors.NOT_FOUND
    assert done.stdout == ""  # no frame of a queued run that does not exist
    [line] = error_lines(done)
    assert line == f"error: run 01a2nope not found at {server.url}"


def test_nothing_is_drawn_while_the_server_is_down(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens here
    env = user_env(tmp_path / "config", STEPLOG_API_KEY="slk_anything", STEPLOG_URL=url,
                   **TERMINAL)  # fmt: skip
    done = steplog("tail", "01a2nope", "--give-up", "0.5", env=env, timeout=30)
    assert done.returncode == errors.UNREACHABLE
    assert "queued" not in done.stdout and "%" not in done.stdout
    assert error_lines(done)[-1].startswith(f"error: cannot reach steplog at {url}")


def test_a_refused_loopback_target_says_what_is_allowed_once(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(demo=1)
    env = user_env(tmp_path / "config", STEPLOG_API_KEY=server.api_key, STEPLOG_URL=server.url)
    elsewhere = "http://127.0.0.1:1/demo/in/ada-lovelace"  # loopback, not the demo's port
    done = steplog("trigger", "scrape", "-p", f"url={elsewhere}", "--follow", env=env)
    assert done.returncode == errors.FAILED, done.stdout + done.stderr
    allowed = f"only the demo site at 127.0.0.1:{server.port}/demo may be scraped on a loopback"
    assert done.stdout.count(allowed) == 1, done.stdout
    assert "STEPLOG_SCRAPE_ALLOW_HOSTS" in done.stdout
    assert done.stdout.count("refused to fetch") == 1, done.stdout


def test_event_lines_line_up_with_and_without_a_pct(server: ServerProcess, tmp_path: Path) -> None:
    env = user_env(tmp_path / "config", STEPLOG_API_KEY=server.api_key, STEPLOG_URL=server.url)
    done = steplog("trigger", "ticker", "-p", "count=2", "-p", "interval_ms=0", "--follow",
                   env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = [line for line in done.stdout.splitlines() if line[:6].strip().isdigit()]
    kinds = {word for line in events for word in line.split() if word[:4] in ("run.", "step")}
    assert "run.queued" in kinds and "step.progress" in kinds, done.stdout
    columns = {line.index(" run.") if " run." in line else line.index(" step.") for line in events}
    assert len(columns) == 1, done.stdout  # the type starts in one column on every line
