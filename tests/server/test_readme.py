"""The README's runnable examples, run verbatim against a real server: a README that drifts fails.

A shell block is runnable when the line before its fence is `<!-- readme-test -->`
(invisible on GitHub). The blocks run in order in one bash session (`set -euo
pipefail`), so a later block may use what an earlier one set (`$RUN`, `$TOKEN`),
from a directory laid out like a clone after `make run`: `.venv/` and `data/`.
The only change made to them is the port: the server listens on a free one, not 8000.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.server.cli import user_env
from tests.support.launcher import ROOT

README = ROOT / "README.md"
MARKER = "<!-- readme-test -->"


def runnable_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, body) of every marked shell block; a marker that marks nothing is an error."""
    lines = text.splitlines()
    blocks = []
    for number, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        fence = lines[number + 1] if number + 1 < len(lines) else ""
        assert fence.strip() in ("```sh", "```bash"), f"README line {number + 1}: {MARKER} "
        "must be followed by a ```sh block"
        end = lines.index("```", number + 2)
        blocks.append((number + 3, "\n".join(lines[number + 2 : end])))
    return blocks


def test_the_readme_marks_its_examples() -> None:
    blocks = runnable_blocks(README.read_text(encoding="utf-8"))
    text = "\n".join(body for _, body in blocks)
    for example in ("steplog trigger", "steplog tail", "curl", "webhook-signature", "audit"):
        assert example in text, f"no runnable README block shows {example!r}"


@pytest.mark.timeout(300)
@pytest.mark.needs("chromium")  # the quick start scrapes the demo site
@pytest.mark.needs("jq")
def test_every_runnable_readme_block_works_verbatim(
    server_factory: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / ".venv").symlink_to(ROOT / ".venv")
    config = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    for name in ("STEPLOG_API_KEY", "STEPLOG_URL", "STEPLOG_DB"):
        monkeypatch.delenv(name, raising=False)
    server = server_factory(clone / "data", demo=1, ping_interval=1)

    script = ["set -euo pipefail"]
    for line, body in runnable_blocks(README.read_text(encoding="utf-8")):
        script.append(f"echo '>>> README.md line {line}' >&2")
        script.append(body.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}"))
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=clone,
        env=user_env(config),
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    where = done.stderr.rsplit(">>> ", 1)[-1][:2000]
    assert done.returncode == 0, f"the README block at {where}\n--- stdout:\n{done.stdout[-3000:]}"
    assert "Traceback" not in done.stderr
    assert '"ticks": 20' in done.stdout  # the quick start's ticker printed its result
    assert "event: completed" in done.stdout  # curl -N read a whole stream
    assert '"status": "queued"' in done.stdout or '"status":"queued"' in done.stdout
