"""The scheduler's policies on plain rows (no model): admission, budgets, prefill forwards."""

from __future__ import annotations

from adapterhub.serving.config import EngineConfig
from adapterhub.serving.handle import RequestHandle
from adapterhub.serving.request import make_request
from adapterhub.serving.rows import Row
from adapterhub.serving.scheduler import Scheduler


def _row(n_prompt: int, max_tokens: int = 8, group: str = "", done: int = 0) -> Row:
    req = make_request("x", max_tokens=max_tokens)
    row = Row(handle=RequestHandle(f"r{n_prompt}-{group}", req), request=req, submitted=0.0)
    row.prompt_ids = list(range(n_prompt))
    row.reserved = n_prompt + max_tokens
    row.done_prefill = done
    row.rendered_for = group  # stands for the group key in these tests
    return row


def _sched(**cfg: int) -> Scheduler:
    return Scheduler(EngineConfig(**cfg), 64, lambda r: r.rendered_for or "")


def test_admission_is_fifo_and_a_big_request_blocks_those_behind_it() -> None:
    s = _sched(max_running=8, max_kv_tokens=72)
    busy = [_row(40, 10)]  # 50 reserved
    big, small = _row(60, 10), _row(2, 2)  # 70 and 4
    assert s.admit([big, small], busy) == []  # big does not fit; small must not overtake it
    assert s.admit([big, small], []) == [big]  # with nothing busy big goes; small (74 > 72) waits
    assert _sched(max_running=8, max_kv_tokens=74).admit([big, small], []) == [big, small]


def test_admission_stops_at_max_running() -> None:
    s = _sched(max_running=3)
    rows = [_row(4) for _ in range(5)]
    assert s.admit(rows, [_row(4)]) == rows[:2]


def test_prefill_budget_per_step() -> None:
    s = _sched(max_running=32)
    assert s.prefill_budget(decoding=0, prefilling=5) == 8 * 64  # nobody to stall
    assert s.prefill_budget(decoding=4, prefilling=5) == 4 * 64  # a half-empty batch fills first
    assert s.prefill_budget(decoding=4, prefilling=1) == 64
    assert s.prefill_budget(decoding=20, prefilling=5) == 64


def test_a_long_prompt_is_chunked_alone_and_continued() -> None:
    s = _sched()
    long, short = _row(200), _row(5)
    first = s.next_prefill([long, short], 64)
    assert first.rows == (long,) and first.n == 64 and not first.continues
    long.done_prefill = 64
    nxt = s.next_prefill([long, short], 256)
    assert nxt.rows == (long,) and nxt.n == 136 and nxt.continues


def test_short_fresh_prompts_of_one_group_share_a_padded_forward() -> None:
    s = _sched()
    a, b, c, other = _row(10), _row(30), _row(20), _row(5, group="sel")
    work = s.next_prefill([a, b, c, other], 128)
    assert work.rows == (a, b, c) and work.n == 30 and work.cost == 90  # padded to the widest
    assert s.next_prefill([a, b, c], 59).rows == (a,)  # 2 rows x 30 would exceed the budget
