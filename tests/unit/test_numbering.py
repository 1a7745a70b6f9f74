"""The numbering both backends share (storage/numbering.py), without a database:
the contract suite covers it through each backend, these pin the rules themselves."""

from __future__ import annotations

import pytest

from storage import chain
from storage.errors import InvalidEvent, LeaseLost, RunFinished, RunNotFound
from storage.model import NewEvent, RunStatus
from storage.numbering import Numbering, RunState


def numbering(**runs: RunState) -> Numbering:
    view = Numbering(0.0)
    view.runs.update(runs)
    return view


def test_numbers_hashes_and_chains_events() -> None:
    view = numbering(a=RunState(1, RunStatus.RUNNING, 4), b=RunState(2, RunStatus.RUNNING, 0))
    first = view.add_event(NewEvent("a", "log", 1, message="hi", pct=12.345, data={"k": 1}))
    second = view.add_event(NewEvent("b", "log", 2), data='"pre-encoded"')

    assert (first.pos, first.seq, first.pct, first.data) == (1, 5, 12.35, '{"k":1}')
    assert (second.pos, second.seq, second.data) == (2, 1, '"pre-encoded"')
    prev = chain.GENESIS_HASH
    for event in (first, second):
        assert event.hash == chain.link(prev, chain.canonical_row(*event[:10]))
        prev = event.hash
    assert view.rows == [tuple(first), tuple(second)]
    assert view.added == [first, second]
    assert (view.head_pos, view.head_hash) == (2, second.hash)
    assert sorted(view.changed_runs()) == [("a", 5, None), ("b", 1, None)]
    assert list(view.changed_runs()) == []  # each change is handed out once


@pytest.mark.parametrize(
    ("new", "error"),
    [
        (NewEvent("a", "no.such.type", 1), InvalidEvent),
        (NewEvent("missing", "log", 1), RunNotFound),
        (NewEvent("done", "log", 1), RunFinished),
        (NewEvent("a", "log", 2), LeaseLost),
    ],
)
def test_refused_events_change_nothing(new: NewEvent, error: type[Exception]) -> None:
    view = numbering(a=RunState(1, RunStatus.RUNNING, 3), done=RunState(1, RunStatus.SUCCEEDED, 9))
    with pytest.raises(error):
        view.add_event(new)
    assert (view.head_pos, view.head_hash, view.rows) == (0, chain.GENESIS_HASH, [])
    assert list(view.changed_runs()) == []


def test_terminal_events_end_the_run() -> None:
    view = numbering(ok=RunState(1, RunStatus.RUNNING, 0), bad=RunState(1, RunStatus.RUNNING, 0))
    view.add_event(NewEvent("ok", "run.succeeded", 1, data={"result": {"n": 1}}))
    view.add_event(NewEvent("bad", "run.failed", 1, message="boom", data={}))

    assert sorted(view.changed_runs()) == [
        ("bad", 1, ("failed", None, "boom")),  # no error in data: the message
        ("ok", 1, ("succeeded", '{"n":1}', None)),
    ]
    assert view.runs["ok"].status is RunStatus.SUCCEEDED
    with pytest.raises(RunFinished):
        view.add_event(NewEvent("ok", "log", 1))


def test_new_runs_and_leases_add_their_lifecycle_events() -> None:
    view = numbering()
    queued = view.add_new_run("r", "ticker")
    view.add_lease("r", view.runs["r"], 0, "w1", None, lease_expired=False)
    view.add_lease("r", view.runs["r"], 1, "w2", "w1", lease_expired=True)

    assert queued.type == "run.queued"
    types = [event.type for event in view.added]
    assert types == ["run.queued", "run.started", "run.retrying", "run.started"]
    assert [e.attempt for e in view.added] == [0, 1, 2, 2]
    assert view.runs["r"] == RunState(2, RunStatus.RUNNING, 4, dirty=True)
