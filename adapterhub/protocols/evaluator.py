"""Evaluators: score predictions against references, optionally with the model."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class EvaluatorContext:
    """What a model-aware evaluator (``needs_model=True``) gets besides the texts."""

    model: Any
    tokenizer: Any
    prompts: Sequence[str] = ()
    device: str = "cpu"


@dataclass
class EvalResult:
    """One evaluator's result.

    ``corpus`` keeps the reference library's own names and scales (rouge: 0–1 with
    precision/recall/fmeasure; bleu: sacrebleu's 0–100 score and signature).
    ``headline`` maps metric names to a 0–100 "higher is better" number used for
    tables and forgetting deltas. ``per_example`` is optional per-row detail.

    ``statistics`` (optional, lazy so that ``adapterhub score`` never pays for it) returns,
    per headline metric, an :class:`adapterhub.evaluation.intervals.Statistic`: the
    per-example sufficient statistics the metric is recomputed from on a resample of the
    examples. Without it a metric is reported with ``n`` but no interval.
    """

    evaluator: str
    corpus: dict[str, Any]
    headline: dict[str, float]
    per_example: list[dict[str, Any]] | None = None
    lower_is_better: frozenset[str] = field(default_factory=frozenset)
    statistics: Callable[[], Mapping[str, Any]] | None = field(default=None, repr=False, compare=False)


@runtime_checkable
class Evaluator(Protocol):
    name: str
    description: str
    needs_model: bool

    def score(
        self,
        predictions: Sequence[str],
        references: Sequence[Sequence[str]],
        context: EvaluatorContext | None = None,
        **options: Any,
    ) -> EvalResult:
        """Score ``predictions[i]`` against the references ``references[i]``."""
        ...
