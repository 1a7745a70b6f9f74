"""The writer loop's steps both backends share: taking a group of queued writes,
following how far its transaction got, and telling the commit observers and
listeners about a commit.

None touches the database; each backend's writer does the transaction in
between (storage/sqlite/log.py, storage/postgres/log.py).

One bad operation must not fail the others of its group commit. Values no
transaction could write are refused before they are queued (storage/writer/validate.py);
should an operation fail in the transaction all the same, for whatever reason,
the writer rolls back and applies the group once more with a savepoint per
operation, so the one at fault fails alone and the others commit. That second
pass costs a few statements per operation, and only after a failure: the common
case keeps its one `executemany` per flush.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from storage.interface import CommitListener, CommitObserver
from storage.model import Event
from storage.writer.writes import Append, Pending

P = TypeVar("P", bound=Pending[Any])

MAX_BATCH = 2048
"""Above this many queued operations one transaction is closed and the next begun,
so a flood of appends still gets regular, bounded commits."""


class Progress:
    """How far a write transaction got, which tells what a failure in it means.

    `starting`: BEGIN and the reads before the operations (a database that cannot
    be written now: every operation fails). `applying`: the operations and the
    writes of their flushes (maybe one operation's fault: worth isolating).
    `committing`: COMMIT was sent (on PostgreSQL, the outcome may be unknown).
    """

    __slots__ = ("stage",)

    def __init__(self) -> None:
        self.stage = "starting"

    @property
    def applying(self) -> bool:
        return self.stage == "applying"

    @property
    def committing(self) -> bool:
        return self.stage == "committing"


def worth_isolating(ops: Sequence[Pending[Any]], progress: Progress) -> bool:
    """Whether a failed transaction's operations should be applied again, each in a
    savepoint of its own: it failed while applying them, and there are several."""
    return progress.applying and len(ops) > 1


def appended_runs(ops: Iterable[Pending[Any]]) -> set[str]:
    """The runs the appends among `ops` append to."""
    return {op.event.run_id for op in ops if isinstance(op, Append)}


async def next_group(queue: asyncio.Queue[P], stop: P) -> tuple[list[P], bool]:
    """Wait for a write, then take everything queued behind it (up to `MAX_BATCH`): one
    transaction's worth. Also says whether `stop` was among them (it is left out)."""
    ops = [await queue.get()]
    while len(ops) < MAX_BATCH and not queue.empty():
        ops.append(queue.get_nowait())
    if stop in ops:
        return [op for op in ops if op is not stop], True
    return ops, False


def append_waits(ops: Iterable[Pending[Any]], done: float) -> list[float]:
    """How long each acknowledged append waited, from being queued to `done`.

    Only appends answered with their event count: a refused one (fenced, finished
    run) or one whose caller gave up is not an append latency.
    """
    return [done - op.submitted for op in ops if isinstance(op, Append) and op.acknowledged]


def tell_observers(
    observers: Sequence[CommitObserver],
    ops: Iterable[Pending[Any]],
    added: list[Event],
    log: logging.Logger,
) -> None:
    """Tell the commit observers what a commit added and how long each append waited.

    Called after every caller is answered (`Pending.settle`), which is what tells
    the acknowledged appends from the refused ones.
    """
    waits = append_waits(ops, time.monotonic())
    for observer in list(observers):
        try:
            observer(added, waits)
        except Exception:  # metrics must never stop the writer
            log.exception("commit observer failed")


def tell_listeners(listeners: Sequence[CommitListener], head: int, log: logging.Logger) -> None:
    """Wake the commit listeners with the new head `pos`."""
    for listener in list(listeners):
        try:
            listener(head)
        except Exception:  # a broken listener must not stop the writer
            log.exception("commit listener failed")
