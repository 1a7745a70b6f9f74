"""A benchmark's server never rewrites the user's per-user config (where the CLI finds serve)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.common import _server
from tests.support.wait import wait_until


def test_a_bench_server_records_itself_in_its_own_config_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = tmp_path / "users-config"
    mine = users / "steplog" / "config.json"
    mine.parent.mkdir(parents=True)
    mine.write_text('{"written_by": "steplog serve", "url": "http://127.0.0.1:8000"}')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(users))
    with _server(tmp_path / "bench", "appends") as server:
        recorded = tmp_path / "bench" / "appends" / "config-home" / "steplog" / "config.json"
        wait_until(recorded.exists, what="serve to record itself")  # just after it answers
        assert json.loads(recorded.read_text())["url"] == server.url
    assert json.loads(mine.read_text())["url"] == "http://127.0.0.1:8000"
