"""``exact_match`` and ``accuracy``: answer matching after a documented normalisation.

Normalisation (see :func:`._common.normalize`): lowercase, collapse whitespace, strip
surrounding whitespace and punctuation. ``exact_match`` compares the whole normalised
answer; ``accuracy`` is for label tasks (sentiment, classification) and compares only
the first word, so ``"Positive. The reviewer loved it"`` counts as ``positive``. With
several references, an example is correct if it matches any of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from adapterhub.protocols.evaluator import EvalResult, EvaluatorContext

from ._common import EvaluatorOptions, check_inputs, first_word, normalize, parse_options


@dataclasses.dataclass(frozen=True)
class MatchOptions(EvaluatorOptions):
    per_example: bool = False
    """Add ``{"correct": bool, "normalized": str}`` per example."""


class _MatchEvaluator:
    name: str
    description: str
    needs_model = False

    def key(self, text: str) -> str:
        return normalize(text)

    def score(
        self,
        predictions: Sequence[str],
        references: Sequence[Sequence[str]],
        context: EvaluatorContext | None = None,
        **options: Any,
    ) -> EvalResult:
        opts = parse_options(self.name, MatchOptions, options)
        refs = check_inputs(self.name, predictions, references)
        key = self.key
        normed = [key(p) for p in predictions]
        correct = [n in {key(r) for r in rs} for n, rs in zip(normed, refs, strict=True)]
        value = sum(correct) / len(correct)
        per_example = None
        if opts.per_example:
            per_example = [{"correct": c, "normalized": n} for c, n in zip(correct, normed, strict=True)]
        return EvalResult(
            evaluator=self.name,
            corpus={self.name: value, "correct": sum(correct), "total": len(correct)},
            headline={self.name: value * 100.0},
            per_example=per_example,
        )


class ExactMatchEvaluator(_MatchEvaluator):
    name = "exact_match"
    description = "whole answer equals a reference after lowercasing and stripping surrounding punctuation/space"


class AccuracyEvaluator(_MatchEvaluator):
    name = "accuracy"
    description = "label accuracy: first word of the normalised answer equals the reference label"

    def key(self, text: str) -> str:
        return first_word(text)
