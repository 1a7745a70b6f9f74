"""What the request handlers share: settings, the log, the hub, the workers."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from quart import current_app

from functions.sealing import Sealer
from functions.worker import WorkerPool
from storage import EventLog
from stream.http.tokens import TokenKey
from stream.settings import Settings
from stream.sse.hub import TailHub


@dataclass(slots=True)
class AppState:
    settings: Settings
    events: EventLog
    hub: TailHub
    pool: WorkerPool | None
    token_key: TokenKey
    sealer: Sealer | None = None
    """Seals secrets in params at intake; None when no key is configured (PostgreSQL)."""
    clock: Callable[[], float] = field(default=time.time)
    """Wall time in seconds, for run token expiries (tests may substitute their own)."""

    @property
    def api_key(self) -> str:
        assert self.settings.api_key is not None
        return self.settings.api_key


def state() -> AppState:
    found: AppState = current_app.extensions["steplog"]
    return found
