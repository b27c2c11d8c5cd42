"""--resolve: n per task from a pilot, within a budget, saying what it cannot reach."""

from __future__ import annotations

import pytest

from adapterhub.errors import EvaluationError
from adapterhub.evaluation.forgetting import ForgettingRun
from adapterhub.evaluation.harness import TaskEvaluation
from adapterhub.evaluation.resolve import describe, grows, plan, record
from adapterhub.manifest import ForgettingReport, ForgettingRow


def _ev(task: str, n: int, seconds: float, cached: bool = False) -> TaskEvaluation:
    return TaskEvaluation(task, "test", n, "0" * 64, 4, [""] * n, [], seconds, cached=cached)


def _pilot(widths: dict[str, float], n: int = 20, seconds: float = 2.0) -> ForgettingRun:
    rows = [ForgettingRow(task=t, metric="m", base=50, adapted=49, delta=-1, flagged=False, n=n, ci_low=-1 - w, ci_high=-1 + w,
                          verdict="unresolved", resolution=w) for t, w in widths.items()]
    run = ForgettingRun(report=ForgettingReport(threshold=2.0, rows=rows), own_task=None)
    for t in widths:
        run.base[t], run.adapted[t] = _ev(t, n, seconds), _ev(t, n, seconds)
    return run


def test_n_grows_with_the_square_of_the_width_ratio() -> None:
    plans = {p.task: p for p in plan(_pilot({"a": 10.0, "b": 1.0}), 2.0, None, {"a": 10_000, "b": 10_000})}
    assert plans["a"].needed == 500 and plans["a"].n == 500 and plans["a"].short_of_target is None  # 20 × (10/2)²
    assert plans["a"].expected_half_width == pytest.approx(2.0)
    assert plans["b"].n == 20 and not grows([plans["b"]])  # already finer than asked


def test_split_size_caps_and_is_reported() -> None:
    [p] = plan(_pilot({"a": 10.0}), 2.0, None, {"a": 100})
    assert p.n == 100 and p.short_of_target == "split"
    assert p.expected_half_width == pytest.approx(10.0 * (20 / 100) ** 0.5)
    assert "the test split has 100" in describe([p], 2.0)[0]


def test_budget_scales_every_task_and_is_reported() -> None:
    # 0.2 s per example (base + adapted); 500 + 500 examples would take 200 s; 60 s left.
    plans = plan(_pilot({"a": 10.0, "b": 10.0}), 2.0, 100.0, {"a": 10_000, "b": 10_000}, spent_s=40.0)
    assert all(p.short_of_target == "budget" for p in plans)
    assert sum(p.n * p.seconds_per_example for p in plans) <= 60.0
    assert all(p.n > p.pilot_n for p in plans)
    assert "raise --budget" in describe(plans, 2.0)[0]
    doc = record(plans, 2.0, 100.0, 40.0)
    assert doc["tasks"]["a"]["short_of_target"] == "budget" and doc["pilot_seconds"] == 40.0


def test_no_variation_keeps_the_pilot() -> None:
    [p] = plan(_pilot({"a": 0.0}), 2.0, None, {"a": 1000})
    assert p.n == 20 and p.short_of_target == "no-variation" and "no variation" in describe([p], 2.0)[0]


def test_bad_targets() -> None:
    with pytest.raises(EvaluationError, match="above 0 points"):
        plan(_pilot({"a": 1.0}), 0.0, None, {})
    with pytest.raises(EvaluationError, match="above 0 seconds"):
        plan(_pilot({"a": 1.0}), 1.0, -5.0, {})
