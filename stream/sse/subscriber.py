"""One open stream, as the hub and the response that writes it share it.

The hub (its admission and its tail) and the response body run in different
tasks and never call each other; they meet only here. So that neither can
undo what the other did, every piece of state has one writer, and the
methods are grouped by direction:

**The hub → the response.** The hub writes, the response reads.

- `push(key, frame, terminal)` (the tail): a frame for the stream, into a bounded
  buffer; one that overflows is dropped (`overflowed`) and its client resumes
  from the log.
- `close(farewell)` (admission: lifetime, shutdown): end the stream at its next
  wake-up, sending `farewell` first.
- The response reads them with `ready`/`wait()`, `drain()`, `closed`, `overflowed`,
  `farewell`. It consumes the buffer (`drain`), which is what a queue is for.

**The response → the hub.** The response writes, the hub reads.

- `attach(task)` / `detach()`: which task writes the response, while it runs.
- `writing(now)` / `wrote()`: a chunk is being written since `now`; the watchdog
  reads `writing_since` to find clients that stopped taking bytes.

**The hub on the response**, once: `drop()` cancels the attached task (a write
stuck for longer than the write timeout), which ends the response.

`token` and `deadline` are set once, by admission, when the stream is admitted.
The response may also wake its own wait (`nudge`, for its ping timer): that
sends nothing and changes nothing the hub wrote.
"""

from __future__ import annotations

import asyncio
import math

Item = tuple[int, bytes, bool]
"""(key, frame, terminal): the id the frame carries (a run's `seq` or the global
`pos`), its bytes, and whether it is the run's last event."""


class Subscriber:
    """The buffer and the flags of one open stream (see the module docstring)."""

    __slots__ = (
        "_closed",
        "_farewell",
        "_items",
        "_limit",
        "_overflowed",
        "_ready",
        "_task",
        "_waiter",
        "deadline",
        "dropped",
        "token",
        "tokens",
        "writing_since",
    )

    def __init__(
        self,
        limit: int,
        *,
        token: str | None = None,
        tokens: tuple[str, ...] = (),
        deadline: float = math.inf,
    ) -> None:
        self._items: list[Item] = []
        self._ready = False
        self._waiter: asyncio.Future[None] | None = None
        self._limit = limit
        self._overflowed = False
        self._closed = False
        self._farewell = b""
        self._task: asyncio.Task[object] | None = None
        self.token = token
        """The run token the stream was opened with (None: the API key). Admission's."""
        self.tokens = tokens or ((token,) if token is not None else ())
        """Every run token the stream holds a slot of (several: a multiplexed stream)."""
        self.deadline = deadline
        """When the stream ends (monotonic clock): lifetime or token expiry. Admission's."""
        self.writing_since: float | None = None
        """Since when the response has been writing one chunk (None: not writing).
        The response's; read by the watchdog."""
        self.dropped = False
        """Whether the watchdog cancelled the response (`drop`). The hub's."""

    # -- the hub -> the response -----------------------------------------------
    def push(self, key: int, frame: bytes, terminal: bool) -> None:
        """Queue a frame (the tail's fan-out); past the buffer's limit, overflow instead."""
        if self._overflowed or self._closed:
            return
        items = self._items
        if len(items) >= self._limit:
            self._overflowed = True
            items.clear()
        else:
            items.append((key, frame, terminal))
        self._wake()

    def close(self, farewell: bytes = b"") -> None:
        """End the stream at its next wake-up, sending `farewell` first (the first one given)."""
        if not self._closed:
            self._closed = True
            self._farewell = farewell
        self._wake()

    @property
    def closed(self) -> bool:
        """The hub ended the stream (lifetime, shutdown, the hub stopping)."""
        return self._closed

    @property
    def overflowed(self) -> bool:
        """The stream fell a whole buffer behind: it ends and its client resumes from the log."""
        return self._overflowed

    @property
    def farewell(self) -> bytes:
        """The comment to send before ending, when the hub ended the stream."""
        return self._farewell

    @property
    def ready(self) -> bool:
        """Something to drain, or the stream was closed (or nudged): `drain` now."""
        return self._ready

    def wait(self) -> asyncio.Future[None]:
        """Await it until `ready` (check `ready` first: this does not).

        One future, made when the response starts waiting and resolved by the next
        `push`, `close` or `nudge`: not an `asyncio.Event`, whose waiter list (a deque
        of about 700 bytes) and coroutine per wait cost memory on every idle stream
        and time on every delivery. A wait cancelled with its task leaves a done
        future behind, and the next wait makes a new one.
        """
        waiter = self._waiter
        if waiter is None or waiter.done():
            waiter = self._waiter = asyncio.get_running_loop().create_future()
        return waiter

    def drain(self) -> list[Item]:
        """Take every queued frame, oldest first."""
        items, self._items = self._items, []
        self._ready = False
        return items

    def nudge(self) -> None:
        """Wake the response's `wait` with nothing queued (its own ping timer)."""
        self._wake()

    def _wake(self) -> None:
        self._ready = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- the response -> the hub -----------------------------------------------
    def attach(self, task: asyncio.Task[object] | None) -> None:
        """The response started, written by `task`: what `drop` cancels."""
        self._task = task

    def detach(self) -> None:
        """The response is over: forget its task.

        A finished task holds its coroutine's frames, and a cancelled one the
        traceback with the chunk that was being sent; a stream that outlives its
        response (anything still referring to it) must not keep them alive.
        """
        self._task = None

    def writing(self, now: float) -> None:
        """The response hands a chunk to the server at `now` (monotonic)."""
        self.writing_since = now

    def wrote(self) -> None:
        """The server took the chunk: the client is reading."""
        self.writing_since = None

    # -- the hub on the response ----------------------------------------------
    def drop(self) -> bool:
        """End a response stuck writing by cancelling its task (once); whether it did."""
        if self.dropped or self._task is None:
            return False
        self.dropped = True
        self._task.cancel()  # the response ends; admission's release() counts it
        return True
