"""The `Context` a function reports its steps through, straight into the durable log.

Every call returns only once its event is committed, so what the stream shows
is never ahead of what a restart would find. A value the log cannot take (text
with a lone surrogate, a NaN `pct`, data no JSON encoder can write) is refused
to the call that passed it, with `InvalidEvent` naming the field, and to no
other run; a function that lets it propagate fails its run with that error.

A sync function gets `SyncContext`, the same API called from its thread (a
threadpool bridge that leads into the event log rather than an in-memory
queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from storage import Event, EventLog, EventType, LeaseLost, NewEvent, Run, RunFinished
from storage.jsonenc import loads
from storage.validate import storable


class Step:
    """The handle `ctx.step` yields; set `result` to record it in the log (durable step)."""

    __slots__ = ("name", "recorded", "result")

    def __init__(self, name: str) -> None:
        self.name = name
        self.result: Any = None
        self.recorded = False

    def record(self, value: Any) -> Any:
        """Keep `value` as the step's result: a retry reuses it instead of running again."""
        self.result = value
        self.recorded = True
        return value


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
        self.cancel_event = threading.Event()
        self._recorded: dict[str, tuple[Any, int]] | None = None

    @property
    def cancelled(self) -> bool:
        """True once the run was cancelled or this attempt lost its lease."""
        return self.cancel_event.is_set()

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
    async def step(
        self, name: str, message: str | None = None, *, timeout: float | None = None
    ) -> AsyncIterator[Step]:
        """Run a named step: `step.started`, then `step.completed` or `step.failed`.

        With `timeout` (seconds) the step fails with `TimeoutError` when it runs
        longer. A result set with `handle.record(value)` is written into the
        `step.completed` event, which is what lets `run_step` reuse it on a retry.
        """
        started = self.clock()
        outer = self.current_step
        handle = Step(name)
        await self.emit(EventType.STEP_STARTED, step=name, message=message or name, pct=self.pct)
        self.current_step = name
        try:
            async with asyncio.timeout(timeout):
                yield handle
        except (LeaseLost, RunFinished):
            raise  # another attempt owns the run, or it ended: nothing of ours can be written
        except BaseException as exc:
            if isinstance(exc, TimeoutError) and timeout is not None:
                failure = f"timed out after {timeout:g}s"
            elif isinstance(exc, asyncio.CancelledError):
                failure = "cancelled"
            else:
                # The exception's text may hold what the log refuses (a lone surrogate).
                failure = storable(_describe(exc))
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
            data: dict[str, Any] = {"duration_ms": _ms(self.clock() - started)}
            if handle.recorded:
                data["result"] = handle.result
                data["durable"] = True
            await self.emit(
                EventType.STEP_COMPLETED,
                step=name,
                message=f"{message or name}: done",
                pct=self.pct,
                data=data,
            )
        finally:
            self.current_step = outer

    async def run_step(
        self,
        name: str,
        message: str | None,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
        timeout: float | None = None,
    ) -> Any:
        """A durable step: run `fn(*args)` once per run, not once per attempt.

        When an earlier attempt completed this step, its recorded result is
        returned and the stream shows a `step.completed` marked `reused`.
        """
        recorded = await self.recorded_result(name)
        if recorded is not None:
            return await self._reuse(name, message, *recorded)
        async with self.step(name, message, timeout=timeout) as step:
            step.record(await fn(*args))
        return step.result

    async def recorded_result(self, name: str) -> tuple[Any, int] | None:
        """The result and attempt of an earlier attempt's completed durable step `name`."""
        if self._recorded is None:
            self._recorded = {}
            if self.attempt > 1:
                after = 0
                while batch := await self._events.read_run(self.run_id, after, 2000):
                    for event in batch:
                        if event.type == EventType.STEP_COMPLETED and event.attempt < self.attempt:
                            data = loads(event.data)
                            if isinstance(data, dict) and data.get("durable") and event.step:
                                self._recorded[event.step] = (data.get("result"), event.attempt)
                    after = batch[-1].seq
        return self._recorded.get(name)

    async def _reuse(self, name: str, message: str | None, result: Any, attempt: int) -> Any:
        await self.emit(
            EventType.STEP_COMPLETED,
            step=name,
            message=f"{message or name}: reused from attempt {attempt}",
            pct=self.pct,
            data={"reused": True, "from_attempt": attempt, "durable": True, "result": result},
        )
        return result

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

    @property
    def cancelled(self) -> bool:
        """True once the run was cancelled or this attempt lost its lease: stop soon."""
        return self._ctx.cancelled

    @contextlib.contextmanager
    def step(self, name: str, message: str | None = None) -> Iterator[Step]:
        manager = self._ctx.step(name, message)
        handle: Step = self._call(manager.__aenter__())
        try:
            yield handle
        except BaseException as exc:
            if not self._call(manager.__aexit__(type(exc), exc, exc.__traceback__)):
                raise
        else:
            self._call(manager.__aexit__(None, None, None))

    def run_step(self, name: str, message: str | None, fn: Callable[..., Any], *args: Any) -> Any:
        """The durable step of `Context.run_step`, for a function running in a thread."""
        recorded = self._call(self._ctx.recorded_result(name))
        if recorded is not None:
            return self._call(self._ctx._reuse(name, message, *recorded))
        with self.step(name, message) as step:
            step.record(fn(*args))
        return step.result

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
