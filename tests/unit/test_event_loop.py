"""`STEPLOG_EVENT_LOOP`: uvloop by default, the standard loop on request, nonsense refused."""

from __future__ import annotations

import asyncio

import pytest

from stream import eventloop
from stream.settings import Settings


def running_loop_type(choice: str) -> str:
    settings = Settings.from_env({"STEPLOG_EVENT_LOOP": choice} if choice else {})

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    return eventloop.run(which(), eventloop.loop_factory(settings.event_loop))


def test_serve_and_worker_run_on_uvloop_unless_told_otherwise() -> None:
    assert running_loop_type("").startswith("uvloop")
    assert running_loop_type("uvloop").startswith("uvloop")
    assert running_loop_type("asyncio").startswith("asyncio")


def test_an_unknown_loop_is_refused_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="STEPLOG_EVENT_LOOP must be uvloop or asyncio"):
        Settings.from_env({"STEPLOG_EVENT_LOOP": "trio"})
