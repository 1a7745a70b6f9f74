"""Ending an attempt that did not succeed: decide how, then write it down, whatever the log does.

`judge` decides: a failure that can pass, or the event log failing (never the
function's fault), hands the run back for another attempt (`run.retrying`,
claimable after a back-off) while it has attempts left; anything else fails
it (`run.failed`, with the error). `settle` writes that decision, and when the
log fails to take it (storage still down), backs off (jittered, bounded) and
tries again until the lease would have expired. Past that the lease's expiry
is the safety net: another claim retries the run, or fails it when it has no
attempts left. Either way the worker slot goes on.

A full disk is the exception: an outage that may last minutes and ends when
someone frees space, never the run's fault. The run is handed back, not parked
(parking needs a write too, and a parked run needs someone to resume it): the
slot keeps trying to write `run.retrying` (every `MAX_RETRY` s at most, with no
deadline) and it commits as soon as space is back; that attempt is refunded
(`max_attempts` + 1), so however long the disk stays full, the run loses no
attempt. Its lease cannot expire meanwhile: the SQLite writer adds the outage
to every lease alive when the disk filled (storage/sqlite/log.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from functions.clock import SYSTEM_CLOCK, Clock
from functions.errors import backoff, is_transient, jittered
from functions.faults import describe, storage_fault, storage_full
from storage import (
    EventLog,
    EventType,
    LeaseLost,
    NewEvent,
    Run,
    RunFinished,
    RunStatus,
    StorageClosed,
)

FIRST_RETRY = 0.1
"""Seconds before a failed settle is tried again; doubled each time up to `MAX_RETRY`."""
MAX_RETRY = 5.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """How an attempt ends: handed back (`retry_in` seconds) or failed (`retry_in` None)."""

    error: str
    retry_in: float | None
    transient: bool
    storage: bool
    """The event log failed, not the function."""
    full: bool = False
    """The log's disk is full: handed back whatever the attempts, and refunded."""


def judge(exc: BaseException, run: Run, retry_backoff: float) -> Verdict:
    """How attempt `run.attempt` ends after `exc`."""
    fault = storage_fault(exc)
    transient = fault is not None or is_transient(exc)
    error = describe(fault if fault is not None else exc)
    if fault is not None and fault.full:
        return Verdict(error, backoff(1, retry_backoff), transient, storage=True, full=True)
    if transient and run.attempt < run.max_attempts:
        return Verdict(error, backoff(run.attempt, retry_backoff), transient, fault is not None)
    return Verdict(error, None, transient, fault is not None)


async def settle(
    events: EventLog,
    run: Run,
    verdict: Verdict,
    *,
    give_up_after: float,
    log: logging.Logger,
    max_retry: float = MAX_RETRY,
    clock: Clock = SYSTEM_CLOCK,
) -> bool:
    """Write `verdict` for attempt `run.attempt`, trying again while the log fails.

    True once written, or once there is nothing left to settle (another attempt
    took the run over, or it already ended). False when the log still failed
    after `give_up_after` seconds, or is closed: the run's lease then expires and
    another claim takes it. A verdict for a full disk has no deadline: it is
    written once space is back. The first failure is logged (with its traceback
    unless the disk is full, which the log itself reports), the retries only at
    DEBUG, the outcome once.

    Tries are at most `max_retry` seconds apart. The worker passes a third of its
    lease: after a full disk the writer gives every lease the outage back, which
    leaves the lease at least two thirds of its length once space returns, and the
    hand-back must land within that, or an idle slot's claim would take the run
    over as a counted attempt.
    """
    deadline = float("inf") if verdict.full else clock.monotonic() + give_up_after
    tries = 0
    while True:
        tries += 1
        try:
            if tries > 1 and await _settled_meanwhile(events, run):
                log.info("run %s attempt %d: settled meanwhile", run.id, run.attempt)
                return True
            await _write(events, run, verdict)
        except (LeaseLost, RunFinished) as exc:
            log.info("run %s attempt %d: nothing to settle (%s)", run.id, run.attempt, exc)
            return True
        except StorageClosed:
            log.warning(
                "run %s attempt %d: not settled, the event log is closed; its lease will expire",
                run.id, run.attempt,
            )  # fmt: skip
            return False
        except Exception as exc:
            delay = jittered(backoff(tries, FIRST_RETRY, max_retry))
            if tries == 1:
                log.warning(
                    "run %s attempt %d: could not settle (%s); trying again with back-off",
                    run.id, run.attempt, describe(exc),
                    exc_info=None if storage_full(exc) else exc,
                )  # fmt: skip
            else:
                log.debug("run %s attempt %d: settle try %d failed: %s",
                          run.id, run.attempt, tries, describe(exc))  # fmt: skip
            if clock.monotonic() + delay > deadline:
                log.error(
                    "run %s attempt %d: not settled after %d tries (%s); its lease will expire"
                    " and another claim will take the run over",
                    run.id, run.attempt, tries, describe(exc),
                )  # fmt: skip
                return False
            await clock.sleep(delay)
        else:
            if tries > 1:
                log.info("run %s attempt %d: settled after %d tries", run.id, run.attempt, tries)
            return True


async def _settled_meanwhile(events: EventLog, run: Run) -> bool:
    """Whether the attempt ended after all: a try whose commit was cut off (a PostgreSQL
    connection lost during COMMIT) may have committed, and must not be written twice."""
    current = await events.get_run(run.id)
    return current.attempt != run.attempt or current.status != RunStatus.RUNNING


async def _write(events: EventLog, run: Run, verdict: Verdict) -> None:
    if verdict.retry_in is not None:
        await events.retry_later(
            run.id, run.attempt, verdict.retry_in, verdict.error, refund=verdict.full
        )
        return
    await events.append(
        NewEvent(
            run.id,
            EventType.RUN_FAILED,
            run.attempt,
            message=verdict.error,
            data={"error": verdict.error, "transient": verdict.transient, "attempt": run.attempt},
        )
    )
