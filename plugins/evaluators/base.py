"""``ExampleEvaluator``: the one score loop every built-in evaluator shares.

Every evaluator did the same four things: validate its options, check the inputs, score
each example, and accumulate the rows into a corpus number (a mean, a token-weighted
mean, or the library's own corpus statistic). This base class owns that loop, so a new
evaluator is only its scoring function::

    class WordCount(ExampleEvaluator):
        name = "words"
        description = "mean word count of the answers"

        def score_example(self, prediction, references, options):
            return {"words": float(len(prediction.split()))}

        def headline(self, corpus, options):
            return {"words": corpus["words"]}    # already on its own scale

The hooks, in the order :meth:`score` calls them:

* :meth:`parse` — the options object (default: ``options_type``, unknown keys refused;
  the ``evaluate`` bridge passes free-form keys on to its library instead).
* :meth:`scorer` — per-call setup (build a scorer once); by default it returns
  :meth:`score_example` bound to the options.
* :meth:`score_rows` — every example's row; override for batched work (perplexity runs
  the model over batches, not one example at a time).
* :meth:`aggregate` — the corpus dict; by default :func:`average_rows` (the exactly
  rounded mean of every numeric key). A corpus statistic that is not a mean of rows
  (sacrebleu's corpus BLEU) overrides it and gets the texts as well.
* :meth:`headline` — 0–100 "higher is better" numbers for tables (default: the key
  named like the evaluator, times ``scale``).
* :meth:`statistics` — per headline metric, the per-example sufficient statistics its
  confidence interval is resampled from (default: none, so no interval). Called lazily,
  only when an interval is asked for.

Rows are kept as ``per_example`` (through :meth:`example_detail`) when the options have
``per_example=True``; :meth:`result_name` labels the result (default: ``name``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from adapterhub.protocols.evaluator import EvalResult, EvaluatorContext

from ._common import EvaluatorOptions, check_inputs, parse_options

Row = Mapping[str, Any]
ExampleScorer = Callable[[str, Sequence[str]], Row]


def average_rows(rows: Sequence[Row], keys: Sequence[str] | None = None) -> dict[str, float]:
    """Mean of each numeric key over the rows (``math.fsum``: independent of order).

    ``keys`` defaults to the numeric keys of the first row; bools count as 0/1.
    """
    if not rows:
        return {}
    names = list(keys) if keys is not None else [k for k, v in rows[0].items() if isinstance(v, (int, float))]
    return {k: math.fsum(float(r[k]) for r in rows) / len(rows) for k in names}


def weighted_mean(values: Sequence[float], weights: Sequence[float]) -> float:
    """``sum(values) / sum(weights)``: a pooled mean (e.g. NLL per token over examples)."""
    total = math.fsum(weights)
    return math.fsum(values) / total if total else math.nan


class ExampleEvaluator:
    """Base for evaluators: options → checked inputs → rows → corpus → headline."""

    # Plain (not ClassVar) annotations: the Evaluator protocol declares these as
    # attributes, and mypy refuses a ClassVar where a protocol names an attribute.
    name: str
    description: str
    needs_model: bool = False
    options_type: ClassVar[type[EvaluatorOptions]] = EvaluatorOptions
    """The evaluator's frozen options dataclass (unknown keys refused)."""
    scale: ClassVar[float] = 100.0
    """Factor from the corpus value to the 0–100 headline (1.0 when already 0–100)."""
    lower_is_better: ClassVar[frozenset[str]] = frozenset()

    # --- the scoring function: override this (or scorer) ---------------------------------------
    def score_example(self, prediction: str, references: Sequence[str], options: Any) -> Row:
        """One example's numbers; ``references`` is never empty."""
        raise NotImplementedError(f"evaluator {self.name!r} defines no score_example")

    # --- optional hooks -------------------------------------------------------------------------
    def parse(self, options: Mapping[str, Any]) -> Any:
        """The call's options as one object; by default ``options_type``, unknown keys refused."""
        return parse_options(self.name, self.options_type, options)

    def scorer(self, options: Any, context: EvaluatorContext | None) -> ExampleScorer:
        """Per-call setup; returns the per-example function."""
        return lambda prediction, references: self.score_example(prediction, references, options)

    def score_rows(
        self,
        predictions: Sequence[str],
        references: Sequence[Sequence[str]],
        options: Any,
        context: EvaluatorContext | None,
    ) -> list[Row]:
        one = self.scorer(options, context)
        return [one(p, r) for p, r in zip(predictions, references, strict=True)]

    def aggregate(
        self, rows: Sequence[Row], predictions: Sequence[str], references: Sequence[Sequence[str]], options: Any
    ) -> dict[str, Any]:
        return average_rows(rows)

    def headline(self, corpus: Mapping[str, Any], options: Any) -> dict[str, float]:
        return {self.name: float(corpus[self.name]) * self.scale}

    def statistics(
        self, rows: Sequence[Row], predictions: Sequence[str], references: Sequence[Sequence[str]], options: Any
    ) -> dict[str, Any]:
        """``{headline metric: adapterhub.evaluation.intervals.Statistic}``; empty: no interval."""
        return {}

    def example_detail(self, rows: Sequence[Row], options: Any) -> list[dict[str, Any]]:
        """What ``per_example`` shows of the rows (by default all of each row)."""
        return [dict(r) for r in rows]

    def result_name(self, options: Any) -> str:
        """The ``EvalResult.evaluator`` label (a bridge names the metric it ran)."""
        return self.name

    # --- the Evaluator protocol -----------------------------------------------------------------
    def score(
        self,
        predictions: Sequence[str],
        references: Sequence[Sequence[str]],
        context: EvaluatorContext | None = None,
        **options: Any,
    ) -> EvalResult:
        opts = self.parse(options)
        refs = check_inputs(self.name, predictions, references)
        rows = self.score_rows(predictions, refs, opts, context)
        corpus = self.aggregate(rows, predictions, refs, opts)
        keep = bool(getattr(opts, "per_example", False))
        return EvalResult(
            evaluator=self.result_name(opts),
            corpus=corpus,
            headline=self.headline(corpus, opts),
            per_example=self.example_detail(rows, opts) if keep else None,
            lower_is_better=self.lower_is_better,
            statistics=lambda: self.statistics(rows, predictions, refs, opts),
        )
