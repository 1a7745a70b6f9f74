"""Runs steplog writes for itself (function `steplog.*`), kept out of the users' runs list.

The archiver records every segment in a run of its own (`steplog.archive`, see
storage/archive): it has no worker, no params and ends in the transaction that
made it, so it is not something a user started, can re-run or cancel. `GET /runs`
leaves such runs out (and out of its counts) unless asked for them by function
(`?function=steplog.archive`) or with `?include=internal`; `GET /runs/{id}` still
shows one, marked `internal` and not `rerunnable`.

The filter lives here rather than in the storage backends' SQL: internal runs are
rare (one per archive segment of up to 50,000 events), so paging past them costs
a query now and then, and the backends keep one `list_runs` to maintain.
"""

from __future__ import annotations

from storage import Run
from storage.archive.records import ARCHIVE_FUNCTION
from storage.interface import EventLog

INTERNAL_PREFIX = "steplog."
INTERNAL_FUNCTIONS = (ARCHIVE_FUNCTION,)
"""Every function steplog itself writes runs of (the counts subtract them by name)."""
PAGE = 1000


def is_internal(function: str) -> bool:
    return function.startswith(INTERNAL_PREFIX)


async def user_runs(
    events: EventLog,
    *,
    status: str | None,
    limit: int,
    before: str | None,
) -> list[Run]:
    """Up to `limit` runs, newest first, without internal ones, paging past those."""
    shown: list[Run] = []
    cursor = before
    while len(shown) < limit:
        wanted = limit - len(shown)
        page = await events.list_runs(status=status, limit=wanted, before=cursor)
        shown.extend(run for run in page if not is_internal(run.function))
        if len(page) < wanted:
            break
        cursor = page[-1].id
    return shown


async def user_counts(events: EventLog) -> dict[str, int]:
    """`run_counts()` without the internal runs."""
    counts = await events.run_counts()
    for function in INTERNAL_FUNCTIONS:
        cursor: str | None = None
        while True:
            page = await events.list_runs(function=function, limit=PAGE, before=cursor)
            for run in page:
                left = counts.get(run.status.value, 0) - 1
                counts[run.status.value] = max(left, 0)
            if len(page) < PAGE:
                break
            cursor = page[-1].id
    return {status: count for status, count in counts.items() if count}
