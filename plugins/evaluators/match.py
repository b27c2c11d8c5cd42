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

from ._common import EvaluatorOptions, first_word, normalize
from .base import ExampleEvaluator, Row


@dataclasses.dataclass(frozen=True)
class MatchOptions(EvaluatorOptions):
    per_example: bool = False
    """Add ``{"correct": bool, "normalized": str}`` per example."""


class _MatchEvaluator(ExampleEvaluator):
    options_type = MatchOptions

    def key(self, text: str) -> str:
        return normalize(text)

    def score_example(self, prediction: str, references: Sequence[str], options: Any) -> Row:
        key = self.key
        normed = key(prediction)
        return {"correct": normed in {key(r) for r in references}, "normalized": normed}

    def aggregate(
        self, rows: Sequence[Row], predictions: Sequence[str], references: Sequence[Sequence[str]], options: Any
    ) -> dict[str, Any]:
        correct = sum(1 for r in rows if r["correct"])
        return {self.name: correct / len(rows), "correct": correct, "total": len(rows)}

    def statistics(
        self, rows: Sequence[Row], predictions: Sequence[str], references: Sequence[Sequence[str]], options: Any
    ) -> dict[str, Any]:
        from adapterhub.evaluation.intervals import Statistic

        # A share of correct answers: a proportion, so its interval is Wilson's.
        return {self.name: Statistic.of("proportion", [1.0 if r["correct"] else 0.0 for r in rows])}


class ExactMatchEvaluator(_MatchEvaluator):
    name = "exact_match"
    description = "whole answer equals a reference after lowercasing and stripping surrounding punctuation/space"


class AccuracyEvaluator(_MatchEvaluator):
    name = "accuracy"
    description = "label accuracy: first word of the normalised answer equals the reference label"

    def key(self, text: str) -> str:
        return first_word(text)
