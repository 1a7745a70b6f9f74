"""How a function tells the worker whether a failure is worth another attempt."""

from __future__ import annotations

import random


class TransientError(Exception):
    """A failure that can pass (a timeout, a 5xx, a dropped connection): retry with back-off."""


class PermanentError(Exception):
    """A failure another attempt cannot fix (bad params, a refused target, a 404)."""


class LogUnavailable(TransientError):
    """The event log could not take (or give) this run's events just now.

    Raised by the `Context` calls when the storage failed rather than refused:
    a database error, a full disk, a lost PostgreSQL connection, a log already
    closed. It is not the function's fault, so a function should let it
    propagate: the worker hands the run back for another attempt.

    `full`: the disk holding the log is full. The worker then waits until the
    log takes writes again and hands the run back without counting the attempt.
    """

    def __init__(self, message: str, *, full: bool = False) -> None:
        super().__init__(message)
        self.full = full


class FunctionAborted(PermanentError):
    """The function ended with something that is not an error a run can fail with.

    `SystemExit`, `KeyboardInterrupt`, any other `BaseException` that is not an
    `Exception`, or a `CancelledError` that no cancel request caused: raised on
    the event loop, the first two would stop the whole process. A function may not
    stop its worker, so the run fails instead, with this error naming what it raised.
    """


TRANSIENT: tuple[type[BaseException], ...] = (TransientError, TimeoutError, ConnectionError)


def is_transient(exc: BaseException) -> bool:
    """Retry only what can pass; everything unknown fails the run at once."""
    if getattr(exc, "permanent", False) or isinstance(exc, PermanentError):
        return False
    return isinstance(exc, TRANSIENT)


def backoff(attempt: int, base: float = 1.0, cap: float = 30.0) -> float:
    """Seconds to wait before attempt `attempt + 1`: 1, 2, 4, … capped.

    The exponent is bounded too, so a long outage (thousands of failed tries) never
    overflows a float: that `OverflowError` would escape the very loop that waits.
    """
    return float(min(cap, base * 2.0 ** min(max(0, attempt - 1), 64)))


def jittered(delay: float) -> float:
    """`delay` shortened at random by up to half, so workers that failed together
    (a storage outage fails them all at once) do not all try again at once."""
    return delay * random.uniform(0.5, 1.0)
