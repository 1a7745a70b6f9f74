"""The writer loop's steps both backends share: taking a group of queued writes, and
telling the commit observers and listeners about a commit.

Neither touches the database; each backend's writer does the transaction in
between (storage/sqlite/log.py, storage/postgres/log.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from storage.interface import CommitListener, CommitObserver
from storage.model import Event
from storage.writes import Append, Pending

P = TypeVar("P", bound=Pending[Any])

MAX_BATCH = 2048
"""Above this many queued operations one transaction is closed and the next begun,
so a flood of appends still gets regular, bounded commits."""


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
