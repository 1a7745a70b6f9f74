"""The write requests both backends' writers take: what is asked, not how it is done.

A caller builds one of these, queues it for its log's single writer task and
awaits its future, which resolves only once the transaction that applied it
has committed. Every backend takes the same requests with the same
parameters, so they are defined once here; a backend's operation class
(storage/sqlite/operations.py, storage/postgres/operations.py) extends each
with its own `Operation` base and an `apply` that does the I/O.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any, Generic, TypeVar

from storage.model import Event, NewEvent

T = TypeVar("T")


class Pending(Generic[T]):
    """A write queued for the writer; its future resolves only after the commit."""

    appends = False
    """True for a plain event append, which a batch numbers and writes with the others;
    anything else reads or writes tables itself, so the batch flushes its appends first."""

    def __init__(self) -> None:
        self.future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._result: T | None = None
        self._error: Exception | None = None

    def settle(self) -> None:
        """Resolve the caller's future; called once the transaction committed."""
        if self.future.done():
            return
        if self._error is not None:
            self.future.set_exception(self._error)
        else:
            self.future.set_result(self._result)  # type: ignore[arg-type]


class Append(Pending[Event]):
    """Append one event to its run."""

    appends = True

    def __init__(self, event: NewEvent) -> None:
        super().__init__()
        self.event = event
        self.submitted = time.monotonic()  # for the append latency commit observers see

    @property
    def acknowledged(self) -> bool:
        """Committed and answered with its event (not refused, not abandoned by its caller)."""
        future = self.future
        return future.done() and not future.cancelled() and future.exception() is None


class CreateRun(Pending[tuple[str, bool]]):
    """Create a queued run, or find the one holding `idempotency_key`: (run id, created)."""

    def __init__(
        self,
        function: str,
        params: dict[str, Any],
        idempotency_key: str | None,
        max_attempts: int,
    ) -> None:
        super().__init__()
        self.function = function
        self.params = params
        self.idempotency_key = idempotency_key
        self.max_attempts = max_attempts


class Claim(Pending[str | None]):
    """Lease the oldest claimable run (queued, or running with an expired lease)."""

    def __init__(self, worker_id: str, lease_seconds: float, functions: tuple[str, ...]) -> None:
        super().__init__()
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.functions = functions


class Heartbeat(Pending[None]):
    """Extend the lease `worker_id` holds on attempt `attempt`, or fail with `LeaseLost`."""

    def __init__(self, run_id: str, attempt: int, worker_id: str, lease_seconds: float) -> None:
        super().__init__()
        self.run_id = run_id
        self.attempt = attempt
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds


class Release(Pending[None]):
    """Give a lease back early, so the run is claimable again at once."""

    def __init__(self, run_id: str, attempt: int, worker_id: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.attempt = attempt
        self.worker_id = worker_id


class Secret(Pending[bytes]):
    """The secret stored under `key`, storing `candidate` first if there is none.

    With `replace`, `candidate` replaces whatever is stored (a rotation).
    """

    def __init__(self, key: str, candidate: bytes | None = None, *, replace: bool = False) -> None:
        super().__init__()
        self.key = key
        self.candidate = candidate or secrets.token_bytes(32)
        self.replace = replace


class RetryLater(Pending[None]):
    """Put a failed attempt's run back in the queue, claimable after `delay` seconds."""

    def __init__(self, run_id: str, attempt: int, delay: float, error: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.attempt = attempt
        self.delay = delay
        self.error = error


class Cancel(Pending[bool]):
    """End a queued or running run as cancelled; False when it had already ended."""

    def __init__(self, run_id: str, reason: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.reason = reason
