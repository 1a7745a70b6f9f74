"""How a function tells the worker whether a failure is worth another attempt."""

from __future__ import annotations


class TransientError(Exception):
    """A failure that can pass (a timeout, a 5xx, a dropped connection): retry with back-off."""


class PermanentError(Exception):
    """A failure another attempt cannot fix (bad params, a refused target, a 404)."""


TRANSIENT: tuple[type[BaseException], ...] = (TransientError, TimeoutError, ConnectionError)


def is_transient(exc: BaseException) -> bool:
    """Retry only what can pass; everything unknown fails the run at once."""
    if getattr(exc, "permanent", False) or isinstance(exc, PermanentError):
        return False
    return isinstance(exc, TRANSIENT)


def backoff(attempt: int, base: float = 1.0, cap: float = 30.0) -> float:
    """Seconds to wait before attempt `attempt + 1`: 1, 2, 4, … capped."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))
