"""The `Context` a function reports its steps through, straight into the durable log.

Every call returns only once its event is committed, so what the stream shows
is never ahead of what a restart would find. A sync function gets `SyncContext`,
the same API called from its thread (a threadpool bridge that leads into the
event log rather than an in-memory queue).

A value the log cannot take (text with a lone surrogate, a NaN `pct`, data no JSON
encoder can write) is refused to the call that passed it, and to no other run.
A call that cannot be recorded raises an error that says why, never a driver's
exception: `TypeError`/`ValueError` for a bad argument (checked before anything
is written), `InvalidEvent` for data the log cannot store, `LeaseLost` or
`RunFinished` when this attempt may no longer write, and `LogUnavailable` when
the storage failed (functions/faults.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import numbers
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

from functions.clock import SYSTEM_CLOCK, Clock
from functions.errors import LogUnavailable
from functions.faults import describe, log_failure
from storage import Event, EventLog, EventType, LeaseLost, NewEvent, Run, RunFinished
from storage.jsonenc import loads

T = TypeVar("T")


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

    def __init__(self, log: EventLog, run: Run, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._events = log
        self.run = run
        self.run_id = run.id
        self.attempt = run.attempt
        self.params = run.params
        self.clock = clock
        """Step durations and time limits (functions/clock.py): the worker pool's clock."""
        self.current_step: str | None = None
        self.pct: float | None = None
        self.cancel_event = threading.Event()
        self.stop_reason: str | None = None
        """Set when the worker stops and hands this attempt back: what a step cut short says."""
        self._recorded: dict[str, tuple[Any, int]] | None = None
        self._earlier_pct: float | None = None

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
        """Append one event for this attempt; returns once it is committed.

        The log itself refuses a `pct` that is not a finite number (`InvalidEvent`);
        the 0-100 range is `progress`'s rule.
        """
        _check_text("step", step)
        _check_text("message", message)
        try:
            return await self._events.append(
                NewEvent(self.run_id, type, self.attempt, step, message, pct, data)
            )
        except Exception as exc:
            failure = log_failure(exc, f"record {type} for run {self.run_id}", data)
            if failure is None:
                raise
            raise failure from exc

    @contextlib.asynccontextmanager
    async def step(
        self, name: str, message: str | None = None, *, timeout: float | None = None
    ) -> AsyncIterator[Step]:
        """Run a named step: `step.started`, then `step.completed` or `step.failed`.

        With `timeout` (seconds) the step fails with `TimeoutError` when it runs
        longer. A result set with `handle.record(value)` is written into the
        `step.completed` event, which is what lets `run_step` reuse it on a retry.
        """
        started = self.clock.monotonic()
        outer = self.current_step
        handle = Step(name)
        await self.emit(EventType.STEP_STARTED, step=name, message=message or name, pct=self.pct)
        self.current_step = name
        try:
            async with self.clock.timeout(timeout):
                yield handle
        except (LeaseLost, RunFinished):
            raise  # another attempt owns the run, or it ended: nothing of ours can be written
        except BaseException as exc:
            if isinstance(exc, TimeoutError) and timeout is not None:
                failure = f"timed out after {timeout:g}s"
            elif isinstance(exc, asyncio.CancelledError):
                failure = self.stop_reason or "cancelled"
            else:
                failure = describe(exc)
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self.emit(
                        EventType.STEP_FAILED,
                        step=name,
                        message=f"{message or name} failed: {failure}",
                        pct=self.pct,
                        data={
                            "duration_ms": _ms(self.clock.monotonic() - started),
                            "error": failure,
                        },
                    )
                )
            raise
        else:
            data: dict[str, Any] = {"duration_ms": _ms(self.clock.monotonic() - started)}
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
            recorded: dict[str, tuple[Any, int]] = {}
            highest: float | None = None
            if self.attempt > 1:
                after = 0
                while batch := await self._read_run(after):
                    for event in batch:
                        if event.attempt < self.attempt and event.pct is not None:
                            highest = max(highest or 0.0, event.pct)
                        if event.type == EventType.STEP_COMPLETED and event.attempt < self.attempt:
                            data = loads(event.data)
                            if isinstance(data, dict) and data.get("durable") and event.step:
                                recorded[event.step] = (data.get("result"), event.attempt)
                    after = batch[-1].seq
            self._earlier_pct = highest
            self._recorded = recorded  # only once read in full: a failed read is read again
        return self._recorded.get(name)

    async def earlier_pct(self) -> float | None:
        """The highest percentage earlier attempts reported (None on a first attempt).

        A retry whose progress is not a function of its durable steps alone (a batch
        whose unfinished items are redone) starts there, so the stream never goes back.
        """
        await self.recorded_result("")
        return self._earlier_pct

    async def _read_run(self, after: int) -> list[Event]:
        try:
            return await self._events.read_run(self.run_id, after, 2000)
        except Exception as exc:
            failure = log_failure(exc, f"read the events of run {self.run_id}")
            if failure is None:
                raise
            raise failure from exc

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
        self.pct = pct = _check_pct(pct)
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

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the worker's event loop and wait for its outcome, in this thread.

        Whatever goes wrong on the way is a clear error for the function: called on
        the loop's own thread it would block the loop forever, so it is refused; once
        the worker has stopped (its loop closed, or the call cancelled as the loop
        shuts down) nothing more can be recorded: `LogUnavailable`, which the
        function should let propagate.
        """
        if _running_loop() is self._loop:
            coro.close()
            raise RuntimeError(
                "SyncContext waits for each event to commit, so it cannot be called on the"
                " event loop's own thread; an async function gets Context"
            )
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError as exc:  # the loop is closed
            coro.close()
            raise LogUnavailable(
                f"the worker of run {self.run_id} has stopped; nothing more can be recorded"
            ) from exc
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise LogUnavailable(
                f"the worker of run {self.run_id} stopped before the event was recorded"
            ) from None

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
        return self._call(self._ctx.progress(pct, message, data))

    def log(self, message: str, data: Any = None) -> Event:
        return self._call(self._ctx.log(message, data))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _check_text(name: str, value: Any) -> None:
    """Refuse a non-text step name or message before it reaches (and fails) the log."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, not {type(value).__name__}")


def _check_pct(pct: Any) -> float:
    """`pct` as a float, or a clear error (not a comparison's `TypeError`) when it is none."""
    if isinstance(pct, bool) or not isinstance(pct, numbers.Real):
        raise TypeError(f"pct must be a number between 0 and 100, not {type(pct).__name__}")
    try:
        value = float(pct)
    except OverflowError:
        value = math.inf
    if not 0 <= value <= 100:
        raise ValueError(f"pct must be between 0 and 100, not {pct}")
    return value


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
