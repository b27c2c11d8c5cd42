"""A row's state is one field with one set of legal moves."""

from __future__ import annotations

import pytest

from adapterhub.serving.handle import RequestHandle
from adapterhub.serving.request import make_request
from adapterhub.serving.rows import Row, RowState


def _row() -> Row:
    req = make_request("hi")
    return Row(handle=RequestHandle("r1", req), request=req, submitted=0.0)


def test_the_happy_path_and_a_load() -> None:
    row = _row()
    for state in (RowState.LOADING, RowState.WAITING, RowState.PREFILLING, RowState.DECODING, RowState.FINISHED):
        row.move(state)
        assert row.state is state


@pytest.mark.parametrize(("path", "bad"), [
    ((), RowState.DECODING),  # never decode without a prefill
    ((RowState.PREFILLING,), RowState.WAITING),  # admitted rows never go back to the queue
    ((RowState.PREFILLING, RowState.DECODING), RowState.PREFILLING),
    ((RowState.FINISHED,), RowState.WAITING),  # finished is final
    ((RowState.LOADING,), RowState.PREFILLING),  # a row is pinned before it is admitted
])
def test_illegal_moves_are_refused_naming_the_request(path: tuple[RowState, ...], bad: RowState) -> None:
    row = _row()
    for state in path:
        row.move(state)
    with pytest.raises(RuntimeError, match=f"r1 cannot go from {row.state.value} to {bad.value}"):
        row.move(bad)
    assert row.state is (path[-1] if path else RowState.WAITING)


def test_every_state_can_finish() -> None:
    for path in ((), (RowState.LOADING,), (RowState.PREFILLING,), (RowState.PREFILLING, RowState.DECODING)):
        row = _row()
        for state in path:
            row.move(state)
        row.move(RowState.FINISHED)
