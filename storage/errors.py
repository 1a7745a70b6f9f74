"""One exception root for steplog; each error says what a user needs to act on it.

The HTTP layer maps these to `application/problem+json` responses in one place,
so every subclass carries a stable `status` and a short `title`.
"""

from __future__ import annotations


class SteplogError(Exception):
    """Something went wrong in steplog."""

    status: int = 500
    title: str = "Internal error"

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


class InvalidEvent(SteplogError):
    """The event is not one the log accepts (unknown type, bad value)."""

    status = 400
    title = "Invalid event"
