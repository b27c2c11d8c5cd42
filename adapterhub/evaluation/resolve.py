"""``eval --forgetting --resolve POINTS``: size each task's test set to the resolution asked.

A forgetting report on 20 examples per task has intervals wider than the threshold, so
most verdicts come out *unresolved*. ``--resolve 2`` asks for intervals of ±2 points:

1. a **pilot** runs the report at ``--limit`` examples per task (default 20);
2. per task, the half-width it measured (the widest over the task's metrics) is
   extrapolated with √n: ``n = n_pilot × (half_width / target)²``
   (:func:`~adapterhub.evaluation.intervals.examples_for`), capped by the test split;
3. the time per example the pilot took (base and adapted) prices that ``n``; when the
   total does not fit what is left of ``--budget`` seconds, every task's extra examples
   are scaled down by the same factor;
4. the report is re-run at those sizes (the base's outputs for the pilot's examples are
   regenerated: the cache is keyed by the example count), unless no task grew.

The plan is stored in the report (``generation.resolve``) and printed, including every
task that cannot reach the target and why: the split is too small, the budget too short,
or the pilot saw no variation at all (a zero-width interval gives nothing to
extrapolate from; the pilot's size is kept).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from adapterhub.errors import EvaluationError
from adapterhub.evaluation.intervals import examples_for

if TYPE_CHECKING:
    from adapterhub.evaluation.forgetting import ForgettingRun

DEFAULT_BUDGET_S = 600.0


@dataclass(frozen=True)
class TaskPlan:
    task: str
    pilot_n: int
    pilot_half_width: float
    needed: int | None
    """Examples for the target half-width (None: the pilot saw no variation)."""
    available: int
    n: int
    """What the final run uses."""
    expected_half_width: float
    seconds_per_example: float
    short_of_target: str | None = None
    """Why ``n`` falls short of ``needed``: ``split``, ``budget`` or ``no-variation``."""


def plan(
    pilot: ForgettingRun, target: float, budget_s: float | None, available: Mapping[str, int], spent_s: float = 0.0
) -> list[TaskPlan]:
    """Per task, the test examples the final run should use (module docs)."""
    if target <= 0:
        raise EvaluationError(f"--resolve must be above 0 points, got {target}")
    if budget_s is not None and budget_s <= 0:
        raise EvaluationError(f"--budget must be above 0 seconds, got {budget_s}")
    out: list[TaskPlan] = []
    for task, base in pilot.base.items():
        adapted = pilot.adapted[task]
        n = base.examples
        widths = [r.resolution for r in pilot.report.rows if r.task == task and r.resolution is not None]
        hw = max(widths, default=0.0)
        # A cached base cost nothing in the pilot but will be generated anew at a new size:
        # price it like the adapted model.
        per_ex = (adapted.seconds + (adapted.seconds if base.cached else base.seconds)) / max(1, n)
        needed = examples_for(hw, n, target) if widths else None
        cap = available.get(task, n)
        final = n if needed is None else min(needed, cap)
        out.append(TaskPlan(task, n, hw, needed, cap, final, hw, per_ex,
                            None if needed is not None else "no-variation"))
    out = _fit_budget(out, None if budget_s is None else budget_s - spent_s)
    return [_finish(p, target) for p in out]


def _fit_budget(plans: list[TaskPlan], left_s: float | None) -> list[TaskPlan]:
    """Scale every task's extra examples by one factor so the final run fits ``left_s``."""
    cost = sum(p.n * p.seconds_per_example for p in plans)
    if left_s is None or cost <= left_s:
        return plans
    base_cost = sum(p.pilot_n * p.seconds_per_example for p in plans)
    extra = cost - base_cost
    factor = 0.0 if extra <= 0 or left_s <= base_cost else (left_s - base_cost) / extra
    out = []
    for p in plans:
        n = p.pilot_n + math.floor((p.n - p.pilot_n) * factor)
        out.append(TaskPlan(**{**asdict(p), "n": n}))
    return out


def _finish(p: TaskPlan, target: float) -> TaskPlan:
    expected = p.pilot_half_width * math.sqrt(p.pilot_n / p.n) if p.n else p.pilot_half_width
    reason = p.short_of_target
    if reason is None and p.needed is not None and p.n < p.needed:
        reason = "split" if p.n >= p.available else "budget"
    return TaskPlan(**{**asdict(p), "expected_half_width": expected, "short_of_target": reason})


def grows(plans: list[TaskPlan]) -> bool:
    return any(p.n > p.pilot_n for p in plans)


def describe(plans: list[TaskPlan], target: float) -> list[str]:
    """One line per task that cannot reach ±target, saying why (for stderr)."""
    lines = []
    for p in plans:
        if p.short_of_target == "no-variation":
            lines.append(f"{p.task}: the pilot's {p.pilot_n} examples showed no variation (interval of width 0); "
                         f"kept n={p.n}, the interval may be optimistic")
        elif p.short_of_target == "split":
            lines.append(f"{p.task}: ±{target:g} needs about {p.needed} examples, the test split has {p.available}; "
                         f"expect ±{p.expected_half_width:.1f}")
        elif p.short_of_target == "budget":
            lines.append(f"{p.task}: ±{target:g} needs about {p.needed} examples, the budget allows {p.n}; "
                         f"expect ±{p.expected_half_width:.1f} (raise --budget)")
    return lines


def record(plans: list[TaskPlan], target: float, budget_s: float | None, pilot_s: float) -> dict[str, Any]:
    """What goes into the report's ``generation.resolve``."""
    return {"target": target, "budget_s": budget_s, "pilot_seconds": round(pilot_s, 1),
            "tasks": {p.task: {k: v for k, v in asdict(p).items() if k != "task"} for p in plans}}
