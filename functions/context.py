"""The `Context` a function reports its steps through, straight into the durable log.

Every call returns only once its event is committed, so what the stream shows
is never ahead of what a restart would find. A sync function gets `SyncContext`,
the same API called from its thread (the seed's threadpool bridge, except that
the bridge leads into the event log rather than an in-memory queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from storage import Event, EventLog, EventType, LeaseLost, NewEvent, Run


class Context:
    """Reports the progress of one attempt of one run."""

    def __init__(
        self, log: EventLog, run: Run, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._events = log
        self.run = run
        self.run_id = run.id
        self.attempt = run.attempt
        self.params = run.params
        self.clock = clock
        self.current_step: str | None = None
        self.pct: float | None = None

    async def emit(
        self,
        type: str,
        *,
        step: str | None = None,
        message: str | None = None,
        pct: float | None = None,
        data: Any = None,
    ) -> Event:
        """Append one event for this attempt; returns once it is committed."""
        return await self._events.append(
            NewEvent(self.run_id, type, self.attempt, step, message, pct, data)
        )

    @contextlib.asynccontextmanager
    async def step(self, name: str, message: str | None = None) -> AsyncIterator[None]:
        """Run a named step: `step.started`, then `step.completed` or `step.failed`."""
        started = self.clock()
        outer = self.current_step
        await self.emit(EventType.STEP_STARTED, step=name, message=message or name, pct=self.pct)
        self.current_step = name
        try:
            yield
        except LeaseLost:
            raise  # another attempt owns the run now; nothing of ours can be written
        except BaseException as exc:
            failure = "cancelled" if isinstance(exc, asyncio.CancelledError) else _describe(exc)
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self.emit(
                        EventType.STEP_FAILED,
                        step=name,
                        message=f"{message or name} failed: {failure}",
                        pct=self.pct,
                        data={"duration_ms": _ms(self.clock() - started), "error": failure},
                    )
                )
            raise
        else:
            await self.emit(
                EventType.STEP_COMPLETED,
                step=name,
                message=f"{message or name}: done",
                pct=self.pct,
                data={"duration_ms": _ms(self.clock() - started)},
            )
        finally:
            self.current_step = outer

    async def progress(self, pct: float, message: str | None = None, data: Any = None) -> Event:
        """Report overall progress (0-100) within the current step."""
        if not 0 <= pct <= 100:
            raise ValueError(f"pct must be between 0 and 100, not {pct}")
        self.pct = pct
        return await self.emit(
            EventType.STEP_PROGRESS, step=self.current_step, message=message, pct=pct, data=data
        )

    async def log(self, message: str, data: Any = None) -> Event:
        """Write a free-form log line into the run's stream."""
        return await self.emit(
            EventType.LOG, step=self.current_step, message=message, pct=self.pct, data=data
        )


class SyncContext:
    """`Context` for a function running in a worker thread; each call blocks until committed."""

    def __init__(self, ctx: Context, loop: asyncio.AbstractEventLoop) -> None:
        self._ctx = ctx
        self._loop = loop
        self.run_id = ctx.run_id
        self.attempt = ctx.attempt
        self.params = ctx.params

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @contextlib.contextmanager
    def step(self, name: str, message: str | None = None) -> Iterator[None]:
        manager = self._ctx.step(name, message)
        self._call(manager.__aenter__())
        try:
            yield
        except BaseException as exc:
            if not self._call(manager.__aexit__(type(exc), exc, exc.__traceback__)):
                raise
        else:
            self._call(manager.__aexit__(None, None, None))

    def progress(self, pct: float, message: str | None = None, data: Any = None) -> Event:
        result: Event = self._call(self._ctx.progress(pct, message, data))
        return result

    def log(self, message: str, data: Any = None) -> Event:
        result: Event = self._call(self._ctx.log(message, data))
        return result


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
