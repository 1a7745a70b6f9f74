"""The worker pool: claim runs with a lease, run them, keep the lease alive.

Each of `concurrency` slots loops: claim the oldest claimable run (queued, or
running with an expired lease: its worker died), run its function with a
`Context`, and end the run with `run.succeeded` or `run.failed`. A heartbeat
extends the lease every third of its length; if the lease turns out to be lost
(another worker took the run over), the function is cancelled, and any write it
still attempts is refused by the log (fencing by attempt).

Slots wake on `notify()` (a run was created in this process) or every
`poll_interval` seconds, which picks up runs created by other processes and
leases that expired.
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
from functions.context import Context, SyncContext
from functions.errors import backoff, is_transient
from functions.sealing import Sealer, open_params
from storage import EventLog, EventType, LeaseLost, Run, RunFinished, StorageClosed

log = logging.getLogger("steplog.worker")


class RunTimeout(TimeoutError):
    """The run exceeded its time limit; not retried (another attempt would take as long)."""

    permanent = True


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
    ) -> None:
        self.events = events
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
        self._work: dict[str, tuple[asyncio.Task[Any], Context]] = {}
        self._stopping = False
        self._slots: list[asyncio.Task[None]] = []
        self.running: dict[str, Run] = {}

    def start(self) -> None:
        self._slots = [
            asyncio.create_task(self._slot(), name=f"steplog-worker-{i}")
            for i in range(self.concurrency)
        ]

    def notify(self) -> None:
        """A run was queued: wake idle slots now instead of at the next poll."""
        self._wake.set()

    def cancel(self, run_id: str) -> bool:
        """Stop a run this process is executing now (its `run.cancelled` is already written)."""
        found = self._work.get(run_id)
        if found is None:
            return False
        task, ctx = found
        ctx.cancel_event.set()
        task.cancel()
        return True

    async def stop(self) -> None:
        """Stop claiming; runs still going give their lease back for another worker."""
        self._stopping = True
        self._wake.set()
        for task in self._slots:
            task.cancel()
        await asyncio.gather(*self._slots, return_exceptions=True)
        self._slots = []

    async def _slot(self) -> None:
        while not self._stopping:
            try:
                run = await self.events.claim_run(
                    self.worker_id, self.lease_seconds, self.functions
                )
            except StorageClosed:
                return
            except Exception:
                log.exception("claiming a run failed; retrying after the poll interval")
                run = None
            if run is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow a cancel
                    async with asyncio.timeout(self.poll_interval):
                        await self._wake.wait()
                continue
            await self.execute(run)

    async def execute(self, run: Run) -> None:
        """Run one claimed attempt to its end (or until the lease is lost)."""
        ctx = Context(self.events, run)
        self.running[run.id] = run
        # DEBUG: the transition itself is logged once, from its commit (logger steplog.runs).
        log.debug("run %s (%s) attempt %d started", run.id, run.function, run.attempt)
        work = asyncio.create_task(self._call(ctx, run))
        self._work[run.id] = (work, ctx)
        beat = asyncio.create_task(self._heartbeat(run, work, ctx))
        try:
            result = await work
            await ctx.emit(
                EventType.RUN_SUCCEEDED, message="done", pct=100, data={"result": result}
            )
            log.debug("run %s succeeded", run.id)
        except asyncio.CancelledError:
            # Not `current_task().cancelling()`: cancelling this slot while it awaits
            # `work` cancels `work` first, so the slot sees `work` done and cancelled.
            if not self._stopping:
                log.warning(
                    "run %s attempt %d stopped: cancelled or lease lost", run.id, run.attempt
                )
                return
            # The pool is stopping: give the lease back so another worker resumes at once.
            log.info("run %s attempt %d: giving its lease back (stopping)", run.id, run.attempt)
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
            with contextlib.suppress(Exception):
                await asyncio.shield(self.events.release(run.id, run.attempt, self.worker_id))
            raise
        except (LeaseLost, RunFinished) as exc:
            log.warning("run %s attempt %d: %s", run.id, run.attempt, exc)
        except Exception as exc:
            await self._fail(ctx, exc)
        finally:
            beat.cancel()
            ctx.cancel_event.set()  # a sync function still in its thread should stop now
            self.running.pop(run.id, None)
            self._work.pop(run.id, None)

    async def _call(self, ctx: Context, run: Run) -> Any:
        spec = registry.get(run.function)
        params = spec.params.model_validate(open_params(run.params, self.sealer))
        limit = getattr(params, "run_timeout_s", None) or spec.timeout
        try:
            async with asyncio.timeout(limit) as scope:
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

    async def _fail(self, ctx: Context, exc: Exception) -> None:
        """End the attempt: retry later when the failure can pass, else fail the run."""
        if isinstance(exc, ValidationError):
            error = f"invalid params: {exc.errors(include_url=False)}"
        else:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        with contextlib.suppress(LeaseLost, RunFinished):
            if is_transient(exc) and ctx.attempt < ctx.run.max_attempts:
                delay = backoff(ctx.attempt, self.retry_backoff)
                log.info("run %s attempt %d failed (%s); retry in %gs", ctx.run_id, ctx.attempt,
                         error, delay)  # fmt: skip
                await self.events.retry_later(ctx.run_id, ctx.attempt, delay, error)
                return
            log.debug("run %s failed: %s", ctx.run_id, error)
            await ctx.emit(
                EventType.RUN_FAILED,
                message=error,
                data={"error": error, "transient": is_transient(exc), "attempt": ctx.attempt},
            )

    async def _heartbeat(self, run: Run, work: asyncio.Task[Any], ctx: Context) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self.events.heartbeat(run.id, run.attempt, self.worker_id, self.lease_seconds)
            except (LeaseLost, RunFinished):
                ctx.cancel_event.set()  # cancelled, or another attempt took over
                work.cancel()
                return
            except StorageClosed:
                return
            except Exception:
                log.exception("heartbeat for run %s failed; will try again", run.id)
