"""The events the log itself writes as a run moves through its life.

Every backend writes exactly these (queued, started, retrying after a lost
lease or a failure, given up, cancelled), so the stream looks the same on
SQLite and PostgreSQL; the backends only differ in how they store them.
"""

from __future__ import annotations

from storage.model import EventType, NewEvent


def queued(run_id: str, function: str) -> NewEvent:
    return NewEvent(
        run_id, EventType.RUN_QUEUED, attempt=0, message=f"{function} queued",
        data={"function": function},
    )  # fmt: skip


def leased(
    run_id: str, attempt: int, worker_id: str, *, lost_by: str | None, lease_expired: bool
) -> list[NewEvent]:
    """A claim of attempt `attempt + 1`: `run.retrying` first when a lease had expired."""
    new_attempt = attempt + 1
    events = []
    if lease_expired:
        # A lease given back (`release`: its worker shut down) has no owner left; one that
        # ran out still names the worker that held it.
        handed_back = lost_by is None
        message = (
            f"attempt {attempt} was handed back (its worker shut down); retrying as attempt"
            f" {new_attempt}"
            if handed_back
            else f"attempt {attempt} lost its lease; retrying as attempt {new_attempt}"
        )
        events.append(
            NewEvent(
                run_id,
                EventType.RUN_RETRYING,
                attempt=new_attempt,
                message=message,
                data={
                    "previous_attempt": attempt,
                    "previous_worker": lost_by,
                    "reason": "handed back" if handed_back else "lease expired",
                },
            )
        )
    events.append(
        NewEvent(
            run_id,
            EventType.RUN_STARTED,
            attempt=new_attempt,
            message=f"started (attempt {new_attempt})",
            data={"worker": worker_id},
        )
    )
    return events


def gave_up(run_id: str, attempt: int) -> NewEvent:
    """A run whose last attempt lost its lease: failed, no attempts left."""
    return NewEvent(
        run_id,
        EventType.RUN_FAILED,
        attempt=attempt,
        message=f"gave up after {attempt} attempts: the lease expired",
        data={"error": f"lease of attempt {attempt} expired; no attempts left"},
    )


def retrying(
    run_id: str, attempt: int, delay: float, error: str, *, refund: bool = False
) -> NewEvent:
    """A failed attempt that can pass: queued again, claimable after `delay` seconds.

    `refund`: the storage failed the attempt (a full disk), so it does not count.
    """
    if refund:
        message = (
            f"attempt {attempt} was handed back: the storage could not take its events"
            f" ({error}); it does not count against the run's attempts; retrying as"
            f" attempt {attempt + 1} in {delay:g}s"
        )
    else:
        message = (
            f"attempt {attempt} failed ({error}); retrying as attempt {attempt + 1} in {delay:g}s"
        )
    data: dict[str, object] = {"error": error, "delay_s": delay, "next_attempt": attempt + 1}
    if refund:
        data["refunded"] = True
    return NewEvent(run_id, EventType.RUN_RETRYING, attempt=attempt, message=message, data=data)


def cancelled(run_id: str, attempt: int, reason: str) -> NewEvent:
    return NewEvent(
        run_id,
        EventType.RUN_CANCELLED,
        attempt=attempt,
        message=f"cancelled: {reason}",
        data={"reason": reason},
    )
