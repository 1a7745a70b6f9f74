"""The worker pool: claim runs with a lease, run them, keep the lease alive.

Each of `concurrency` slots loops: claim the oldest claimable run (queued, or
running with an expired lease: its worker died), run its function with a
`Context`, and end the run with `run.succeeded`, or settle its failure
(functions/settle.py: `run.failed`, or `run.retrying` when it can pass or the
event log failed). No fault of a function or of the log ends a slot: a failed
claim is tried again with back-off, a failed settle too, and an error that
escapes a run is logged with its run id. A heartbeat
extends the lease every third of its length; if the lease turns out to be lost
(another worker took the run over), the function is cancelled, and any write it
still attempts is refused by the log (fencing by attempt).

Slots wake on `notify()`: a run was created in this process, or the log's work
listener says a commit made one claimable (on SQLite also another process's
commit, through the doorbell: storage/doorbell.py). Every `poll_interval` seconds
they look anyway, which picks up leases that expired, retries whose back-off
ended, and whatever a wake-up missed. A wake-up that arrives while a slot is
still looking is not lost: the slot's next wait returns at once.

Heartbeats, polling, time limits and the settle back-off wait on the pool's clock
(functions/clock.py), so lease behaviour is tested on a fake one; the lease's
expiry itself is the log's to judge, by the log's own clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from typing import Any

from pydantic import ValidationError

from functions import registry
from functions.clock import SYSTEM_CLOCK, Clock
from functions.context import Context, SyncContext
from functions.errors import (
    FunctionAborted,
    PermanentError,
    TransientError,
    backoff,
    jittered,
)
from functions.faults import describe, storage_full
from functions.sealing import Sealer, open_params
from functions.settle import MAX_RETRY as MAX_SETTLE_RETRY
from functions.settle import judge, settle
from storage import EventLog, EventType, LeaseLost, Run, RunFinished, SteplogError, StorageClosed

log = logging.getLogger("steplog.worker")

CLAIM_BACKOFF_CAP = 5.0
"""Seconds at most between a slot's tries while claiming fails (unless polling is slower)."""


class RunTimeout(TimeoutError):
    """The run exceeded its time limit; not retried (another attempt would take as long)."""

    permanent = True


EXPECTED: tuple[type[BaseException], ...] = (
    TransientError,
    PermanentError,
    TimeoutError,
    ValidationError,
    SteplogError,
)
"""Failures a function declares (or the worker itself raises): logged without a traceback."""


class WorkerPool:
    """In-process workers that lease and run queued runs."""

    def __init__(
        self,
        events: EventLog,
        *,
        concurrency: int = 4,
        lease_seconds: float = 30.0,
        poll_interval: float = 1.0,
        functions: list[str] | None = None,
        worker_id: str | None = None,
        retry_backoff: float = 1.0,
        sealer: Sealer | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.events = events
        self.clock = clock
        self.sealer = sealer  # opens secrets sealed in params (functions/sealing.py)
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.functions = functions if functions is not None else registry.names()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.retry_backoff = retry_backoff
        # Heartbeats also notice a cancelled run, so keep them frequent enough to stop
        # a cancelled run within about a second, whatever the lease length.
        self.heartbeat_interval = min(lease_seconds / 3, 1.0)
        self._wake = asyncio.Event()
        """Set by `notify()`, then replaced: a slot waits on the one current when it last
        looked for a run, so a notify while it looked ends that wait at once."""
        self._work: dict[str, tuple[asyncio.Task[Any], Context]] = {}
        self._stopping = False
        self._slots: list[asyncio.Task[None]] = []
        self._claim_trouble = 0
        """Claims failed in a row, across slots: an outage is logged once, not per slot."""
        self._claim_backoff_cap = max(CLAIM_BACKOFF_CAP, poll_interval)
        self.running: dict[str, Run] = {}

    def start(self) -> None:
        self.events.add_work_listener(self.notify)
        self._slots = [
            asyncio.create_task(self._slot(), name=f"steplog-worker-{i}")
            for i in range(self.concurrency)
        ]

    def notify(self) -> None:
        """A run was queued: wake idle slots now instead of at the next poll."""
        self._wake.set()
        self._wake = asyncio.Event()

    def cancel(self, run_id: str) -> bool:
        """Stop a run this process is executing now (its `run.cancelled` is already written)."""
        found = self._work.get(run_id)
        if found is None:
            return False
        task, ctx = found
        ctx.cancel_event.set()
        task.cancel()
        return True

    async def stop(self, who: str = "the worker") -> None:
        """Stop claiming; runs still going give their lease back for another worker.

        `who` stopped ("the server" for `steplog serve`) is what a running step's
        `step.failed` then says, instead of a bare "cancelled" that reads like a user's.
        """
        for _task, ctx in self._work.values():
            ctx.stop_reason = f"{who} shut down; the run was handed back"
        self._stopping = True
        self.events.remove_work_listener(self.notify)
        self.notify()
        for task in self._slots:
            task.cancel()
        await asyncio.gather(*self._slots, return_exceptions=True)
        self._slots = []

    @property
    def slots_running(self) -> int:
        """Slots alive now: every one of them until `stop` (a slot never dies of a fault)."""
        return sum(not task.done() for task in self._slots)

    async def _slot(self) -> None:
        """Claim and execute runs until the pool stops; no fault of a run or of the log ends it."""
        failures = 0
        while not self._stopping:
            wake = self._wake  # before looking: a notify from now on ends the wait below
            try:
                run = await self.events.claim_run(
                    self.worker_id, self.lease_seconds, self.functions
                )
            except Exception as exc:
                failures += 1
                self._claim_failed(exc, failures)
                await self._idle(
                    jittered(backoff(failures, self.poll_interval, self._claim_backoff_cap)),
                    wake,
                )
                continue
            if failures:
                failures = 0
                self._claim_recovered()
            if run is None:
                await self._idle(self.poll_interval, wake)
                continue
            try:
                await self.execute(run)
            except Exception:  # execute settles every outcome itself: this is a bug in it
                log.exception(
                    "run %s attempt %d: the worker failed; its lease will expire and another"
                    " claim will take the run over", run.id, run.attempt,
                )  # fmt: skip

    async def _idle(self, seconds: float, wake: asyncio.Event) -> None:
        """Wait `seconds`, or until `notify()` (at once if one came since `wake` was taken)."""
        if wake.is_set():
            return
        with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow a cancel
            async with self.clock.timeout(seconds):
                await wake.wait()

    def _claim_failed(self, exc: Exception, failures: int) -> None:
        """Log a claim failure once per outage (not once per slot and poll)."""
        self._claim_trouble += 1
        if self._claim_trouble == 1:
            log.warning("claiming a run failed (%s); retrying with back-off",
                        describe(exc), exc_info=None if storage_full(exc) else exc)  # fmt: skip
        else:
            log.debug("claiming a run failed again (%d in a row here): %s",
                      failures, describe(exc))  # fmt: skip

    def _claim_recovered(self) -> None:
        if self._claim_trouble:
            log.info("claiming runs works again after %d failures", self._claim_trouble)
            self._claim_trouble = 0

    async def execute(self, run: Run) -> None:
        """Run one claimed attempt to its end (or until the lease is lost), and settle it.

        Returns normally whatever the function or the log did: a failure is settled
        (`functions.settle`), and a failure to settle is left to the lease's expiry.
        Only a cancel (the pool stopping) propagates.
        """
        ctx = Context(self.events, run, clock=self.clock)
        self.running[run.id] = run
        # DEBUG: the transition itself is logged once, from its commit (logger steplog.runs).
        log.debug("run %s (%s) attempt %d started", run.id, run.function, run.attempt)
        work = asyncio.create_task(self._call(ctx, run))
        self._work[run.id] = (work, ctx)
        beat = asyncio.create_task(self._heartbeat(run, work, ctx))
        try:
            failure = await self._attempt(ctx, run, work)
            beat.cancel()
            if failure is not None:
                await self._settle(run, failure)
        finally:
            beat.cancel()
            ctx.cancel_event.set()  # a sync function still in its thread should stop now
            self.running.pop(run.id, None)
            self._work.pop(run.id, None)

    async def _attempt(self, ctx: Context, run: Run, work: asyncio.Task[Any]) -> Exception | None:
        """Await the function and record its success; the failure to settle, if any."""
        try:
            result = await work
        except asyncio.CancelledError:
            # Not `current_task().cancelling()`: cancelling this slot while it awaits
            # `work` cancels `work` first, so the slot sees `work` done and cancelled.
            if self._stopping:
                await self._give_back(run, work)
                raise
            if ctx.cancelled:  # cancelled through the API, or the heartbeat found the lease lost
                log.warning(
                    "run %s attempt %d stopped: cancelled or lease lost", run.id, run.attempt
                )
                return None
            return FunctionAborted("CancelledError (no cancel request or lost lease caused it)")
        except (LeaseLost, RunFinished) as exc:
            log.warning("run %s attempt %d: %s", run.id, run.attempt, exc)
            return None
        except Exception as exc:
            return exc
        try:
            await ctx.emit(
                EventType.RUN_SUCCEEDED, message="done", pct=100, data={"result": result}
            )
        except (LeaseLost, RunFinished) as exc:
            log.warning("run %s attempt %d: %s", run.id, run.attempt, exc)
            return None
        except Exception as exc:
            return exc
        log.debug("run %s succeeded", run.id)
        return None

    async def _give_back(self, run: Run, work: asyncio.Task[Any]) -> None:
        """The pool is stopping: give the lease back so another worker resumes at once."""
        log.info("run %s attempt %d: giving its lease back (stopping)", run.id, run.attempt)
        work.cancel()
        with contextlib.suppress(BaseException):
            await work
        with contextlib.suppress(Exception):
            await asyncio.shield(self.events.release(run.id, run.attempt, self.worker_id))

    async def _call(self, ctx: Context, run: Run) -> Any:
        spec = registry.get(run.function)
        params = spec.params.model_validate(open_params(run.params, self.sealer))
        limit = getattr(params, "run_timeout_s", None) or spec.timeout
        try:
            async with self.clock.timeout(limit) as scope:
                if spec.is_async:
                    return await spec.fn(ctx, params)
                loop = asyncio.get_running_loop()
                return await asyncio.to_thread(spec.fn, SyncContext(ctx, loop), params)
        except TimeoutError as exc:
            # Only our own limit makes the run's timeout permanent; a step's time limit
            # (or any other TimeoutError) stays transient and may be retried.
            if limit is not None and scope.expired():
                raise RunTimeout(f"the run took longer than its limit of {limit:g}s") from exc
            raise
        except (Exception, asyncio.CancelledError):
            raise
        except BaseException as exc:
            # SystemExit or KeyboardInterrupt escaping this task would stop the event loop
            # (the whole process); any other BaseException would end the slot. The signals
            # that stop steplog are handled by its own signal handlers, never raised here,
            # so whatever arrives here came from the function.
            raise FunctionAborted(f"{describe(exc)} (a function may not stop its worker)") from exc

    async def _settle(self, run: Run, exc: Exception) -> None:
        """Log the failed attempt once, then end it as `judge` decides."""
        verdict = judge(exc, run, self.retry_backoff)
        outcome = (
            f"retrying in {verdict.retry_in:g}s"
            if verdict.retry_in is not None
            else "failing the run"
        )
        if verdict.full:
            log.warning("run %s attempt %d: the event log's disk is full; handing the run back"
                        " once it takes writes again (this attempt will not count)",
                        run.id, run.attempt)  # fmt: skip
        elif verdict.storage:
            log.warning("run %s attempt %d: the event log failed (%s); %s",
                        run.id, run.attempt, verdict.error, outcome, exc_info=exc)  # fmt: skip
        else:
            expected = isinstance(exc, EXPECTED) and not isinstance(exc, FunctionAborted)
            log.log(logging.INFO if expected else logging.WARNING,
                    "run %s attempt %d: the function failed (%s); %s", run.id, run.attempt,
                    verdict.error, outcome, exc_info=None if expected else exc)  # fmt: skip
        await settle(
            self.events,
            run,
            verdict,
            give_up_after=self.lease_seconds,
            log=log,
            max_retry=min(MAX_SETTLE_RETRY, self.lease_seconds / 3),
            clock=self.clock,
        )

    async def _heartbeat(self, run: Run, work: asyncio.Task[Any], ctx: Context) -> None:
        failures = 0
        while True:
            await self.clock.sleep(self.heartbeat_interval)
            try:
                await self.events.heartbeat(run.id, run.attempt, self.worker_id, self.lease_seconds)
            except (LeaseLost, RunFinished):
                ctx.cancel_event.set()  # cancelled, or another attempt took over
                work.cancel()
                return
            except StorageClosed:
                return
            except Exception as exc:
                failures += 1
                if failures == 1:  # once per outage, not once a second
                    log.warning("run %s attempt %d: heartbeat failed (%s); will try again",
                                run.id, run.attempt, describe(exc),
                                exc_info=None if storage_full(exc) else exc)  # fmt: skip
            else:
                if failures:
                    log.info("run %s attempt %d: heartbeat works again after %d failures",
                             run.id, run.attempt, failures)  # fmt: skip
                failures = 0
