"""One exception root for steplog; each error says what a user needs to act on it.

The HTTP layer maps these to `application/problem+json` responses in one place,
so every subclass carries a stable `status` and a short `title`.
"""

from __future__ import annotations


class SteplogError(Exception):
    """Something went wrong in steplog."""

    status: int = 500
    title: str = "Internal error"
    reason: str | None = None
    """A stable machine-readable name for the problem (the problem body's `reason`)."""
    retry_after: int | None = None
    """Seconds a client should wait before trying again (the `Retry-After` header)."""

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.__doc__ or self.title)

    @property
    def detail(self) -> str:
        return str(self)


class RunNotFound(SteplogError):
    """No run has this id."""

    status = 404
    title = "Run not found"


class LeaseLost(SteplogError):
    """This worker no longer holds the run's lease; its writes are refused (fencing)."""

    status = 409
    title = "Lease lost"


class RunFinished(SteplogError):
    """The run has already ended; nothing more can be appended to it."""

    status = 409
    title = "Run already finished"


class StorageClosed(SteplogError):
    """The event log is closed."""

    status = 503
    title = "Event log unavailable"


class StorageFull(SteplogError):
    """The disk holding the event log is full: nothing more can be written until space is freed.

    An outage, not a fault of the request: nothing was written, and the same
    request succeeds once space is back (the writer checkpoints its WAL and tries
    again by itself). SQLite's `SQLITE_FULL` ("database or disk is full") and
    PostgreSQL's SQLSTATE 53100 (`disk_full`) become this at the backend boundary.
    """

    status = 503
    title = "Storage full"
    reason = "storage_full"
    retry_after = 10


class StorageLow(SteplogError):
    """Free space is below STEPLOG_MIN_FREE_MB: new runs are refused until space is freed.

    Runs already accepted go on (their appends still commit), so what the disk
    has left is spent finishing work rather than taking more.
    """

    status = 503
    title = "Storage low"
    reason = "storage_low"
    retry_after = 30


class InvalidEvent(SteplogError):
    """The event is not one the log accepts (unknown type, bad value)."""

    status = 400
    title = "Invalid event"


class IdempotencyConflict(SteplogError):
    """An idempotency key already started a run with another function or other params.

    A replay must repeat the request it replays: the same key for a different
    request is a client bug (Stripe treats it the same way), not a reason to hand
    back a run that does something else. Nothing is written. `differs` says what
    did not match (`function` or `params`); the params themselves are never part
    of the error (they may hold credentials).
    """

    status = 422
    title = "Idempotency key reused"

    def __init__(self, key: str, differs: str, function: str, existing_function: str) -> None:
        self.key = key
        self.differs = differs
        self.function = function
        self.existing_function = existing_function
        if differs == "function":
            what = f"for function {existing_function!r}, not {function!r}"
        else:
            what = f"for {existing_function!r} with different params"
        super().__init__(f"idempotency key {key!r} was already used {what}")
