"""Whose fault a failure is: the function's, or the event log's.

The worker settles a failed attempt differently for each: a function's error
fails the run (or retries it, when the error says it can pass); the log
failing is never the function's fault, so the run is handed back for another
attempt. The `Context` calls are where the log's failures meet the function:
`log_failure` turns each into an error that says which it is.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from functions.errors import LogUnavailable
from storage import InvalidEvent, SteplogError, StorageFull
from storage.jsonenc import dumps
from storage.writer.validate import storable


def describe(exc: BaseException) -> str:
    """`Type: message` (or just `Type`), the way a run's error shows an exception.

    Always text the log takes (lone surrogates and NUL become U+FFFD): a run's error
    that the log refused would leave the run running.
    """
    if isinstance(exc, ValidationError):
        return storable(f"invalid params: {exc.errors(include_url=False)}")
    text = str(exc)
    return storable(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def log_failure(exc: Exception, doing: str, data: Any = None) -> Exception | None:
    """The error a function should see when the log failed to `doing`; None: `exc` itself.

    The log's refusals already say what is wrong and pass as they are: fencing
    (`LeaseLost`, `RunFinished`) and the other `SteplogError`s below 500
    (`InvalidEvent`, `RunNotFound`). A value the log cannot store as JSON (a
    circular structure, a dict with tuple keys) is the function's: `InvalidEvent`.
    Anything else is the storage failing (a database error, a full disk, a lost
    connection, `StorageClosed`): `LogUnavailable`.
    """
    if isinstance(exc, SteplogError) and exc.status < 500:
        return None
    # A value that failed to encode fails its whole write transaction, so another
    # run's bad data can fail ours: only data that does not encode itself is ours.
    if isinstance(exc, ValueError | TypeError) and not _encodes(data):
        return InvalidEvent(f"cannot {doing}: its data cannot be stored as JSON ({describe(exc)})")
    return LogUnavailable(
        f"the event log could not {doing}: {describe(exc)}", full=isinstance(exc, StorageFull)
    )


def storage_fault(exc: BaseException) -> LogUnavailable | None:
    """The `LogUnavailable` behind `exc`, when the log failing is what ended the attempt.

    Follows the chain of causes, so a function that wrapped the log's failure in
    an error of its own still has its run handed back rather than failed.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, LogUnavailable):
            return current
        seen.add(id(current))
        if current.__cause__ is not None or current.__suppress_context__:
            current = current.__cause__
        else:
            current = current.__context__
    return None


def storage_full(exc: BaseException) -> bool:
    """Whether `exc` is (or was caused by) the log's disk being full.

    A full disk is an outage with its own log lines (once per transition, from the
    log's writer), so the worker logs its consequences without a traceback.
    """
    fault = storage_fault(exc)
    return isinstance(exc, StorageFull) or (fault is not None and fault.full)


def _encodes(data: Any) -> bool:
    try:
        dumps(data)
    except (ValueError, TypeError):
        return False
    return True
