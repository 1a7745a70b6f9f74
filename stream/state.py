"""What the request handlers share: settings, the log, the hub, the workers."""

from __future__ import annotations

from dataclasses import dataclass

from quart import current_app

from functions.worker import WorkerPool
from storage import EventLog
from stream.hub import TailHub
from stream.settings import Settings


@dataclass(slots=True)
class AppState:
    settings: Settings
    events: EventLog
    hub: TailHub
    pool: WorkerPool | None
    token_secret: bytes = b""

    @property
    def api_key(self) -> str:
        assert self.settings.api_key is not None
        return self.settings.api_key


def state() -> AppState:
    found: AppState = current_app.extensions["steplog"]
    return found
