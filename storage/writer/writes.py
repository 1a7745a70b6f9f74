"""The write requests both backends' writers take: what is asked, not how it is done.

A caller builds one of these, queues it for its log's single writer task and
awaits its future, which resolves only once the transaction that applied it
has committed. Building one checks and encodes what the caller hands over
(storage/writer/validate.py), so a value no transaction could write is refused to its
caller, there and then, and never joins a group commit. Every backend takes
the same requests with the same parameters, so they are defined once here; a
backend's operation class (storage/sqlite/operations.py,
storage/postgres/operations.py) extends each with its own `Operation` base and
an `apply` that does the I/O.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any, Generic, TypeVar

from storage.model import Event, NewEvent, Run
from storage.writer.idempotency import check_replay, fingerprint
from storage.writer.validate import event_data, json_text, storable, text

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

    def check_text(self, field: str, value: str | None) -> None:
        """A backend's own limit on a text field, checked as the request is built (so it
        fails only its caller, before anything is queued): none here; PostgreSQL's
        operations refuse NUL (storage/postgres/batch.py)."""

    def refuse(self, exc: Exception) -> None:
        """This operation failed on its own (the transaction goes on without it): the
        caller gets `exc` once the transaction has ended (`settle`)."""
        self._result = None
        self._error = exc

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
        self.data = event_data(event)
        """`event.data` as checked JSON text: what is stored and hashed."""
        self.check_text("step", event.step)
        self.check_text("message", event.message)
        super().__init__()
        self.event = event
        self.submitted = time.monotonic()  # for the append latency commit observers see

    @property
    def acknowledged(self) -> bool:
        """Committed and answered with its event (not refused, not abandoned by its caller)."""
        future = self.future
        return future.done() and not future.cancelled() and future.exception() is None


class CreateRun(Pending[tuple[Run, bool]]):
    """Create a queued run, or find the one holding `idempotency_key`: (run, created).

    A run found under the key is only handed back for a replay of the request that
    created it (`storage.writer.idempotency.check_replay`); otherwise `IdempotencyConflict`.
    The fingerprint is taken here, from the params as the caller gave them, unless the
    caller took it itself (`request_fingerprint`: params it stores transformed, such as
    sealed secrets, must be fingerprinted before that).
    """

    def __init__(
        self,
        function: str,
        params: dict[str, Any],
        idempotency_key: str | None,
        max_attempts: int,
        request_fingerprint: str | None = None,
    ) -> None:
        self.params_json = json_text("params", params)
        text("function", function)
        if idempotency_key is not None:
            text("idempotency_key", idempotency_key)
        self.check_text("function", function)
        self.check_text("idempotency_key", idempotency_key)
        super().__init__()
        self.function = function
        self.params = params
        self.idempotency_key = idempotency_key
        self.max_attempts = max_attempts
        self.fingerprint = (
            None if idempotency_key is None else request_fingerprint or fingerprint(params)
        )

    def replay(self, existing: Run) -> tuple[Run, bool]:
        """The answer for a key that is taken: its run, if this request is a replay."""
        assert self.idempotency_key is not None
        check_replay(
            self.idempotency_key,
            self.function,
            self.fingerprint,
            existing.function,
            existing.idempotency_fingerprint,
        )
        return existing, False


class Claim(Pending[Run | None]):
    """Lease the oldest claimable run (queued, or running with an expired lease).

    Answers with the run as the claim committed it, read by the claim's own
    statement: a read after the commit could fail and leave the run leased to a
    claimer that never learnt of it.
    """

    def __init__(self, worker_id: str, lease_seconds: float, functions: tuple[str, ...]) -> None:
        text("worker_id", worker_id)
        super().__init__()
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.functions = functions
        self.leased: tuple[str, int] | None = None
        """(run id, attempt) this claim wrote, once it has: what to give back when the
        caller never hears whether the transaction committed."""


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
    """Put a failed attempt's run back in the queue, claimable after `delay` seconds.

    `refund`: the attempt does not count against `max_attempts` (raised by one).
    """

    def __init__(
        self, run_id: str, attempt: int, delay: float, error: str, *, refund: bool = False
    ) -> None:
        super().__init__()
        self.run_id = run_id
        self.attempt = attempt
        self.delay = delay
        self.error = storable(error)
        self.refund = refund


class Cancel(Pending[bool]):
    """End a queued or running run as cancelled; False when it had already ended."""

    def __init__(self, run_id: str, reason: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.reason = storable(reason)
