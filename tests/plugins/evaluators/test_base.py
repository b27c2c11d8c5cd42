"""ExampleEvaluator: a new evaluator is only its scoring function.

The words-overlap evaluator below defines ``score_example`` and nothing else of the
loop; options, input checks, the corpus mean, the 0–100 headline and ``per_example``
come from the base class, and it passes the same conformance suite as the built-ins.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
from adapterhub.plugins.evaluators._common import EvaluatorOptions
from adapterhub.plugins.evaluators.base import ExampleEvaluator, Row, average_rows, weighted_mean

from adapterhub.errors import ConfigError, DataError
from adapterhub.protocols.evaluator import Evaluator
from adapterhub.testing.evaluators import check_evaluator


class Overlap(ExampleEvaluator):
    """Share of the prediction's words found in the best-matching reference (0–1)."""

    name = "overlap"
    description = "best word overlap with any reference"

    def score_example(self, prediction: str, references: Sequence[str], options: Any) -> Row:
        words = prediction.lower().split()
        if not words:
            return {"overlap": 0.0}
        return {"overlap": max(sum(w in r.lower().split() for w in words) / len(words) for r in references)}


@dataclasses.dataclass(frozen=True)
class LengthOptions(EvaluatorOptions):
    unit: str = "words"
    per_example: bool = False


class Length(ExampleEvaluator):
    """Mean answer length, already on its own scale; declares options."""

    name = "length"
    description = "mean answer length"
    options_type = LengthOptions
    scale = 1.0

    def score_example(self, prediction: str, references: Sequence[str], options: Any) -> Row:
        n = len(prediction.split()) if options.unit == "words" else len(prediction)
        return {"length": float(min(n, 100))}


def test_a_scoring_function_is_a_whole_evaluator():
    ev = Overlap()
    assert isinstance(ev, Evaluator)
    res = ev.score(["the cat sat", "a dog", ""], [["the cat sat down"], ["no", "a dog barks"], ["x"]])
    assert res.evaluator == "overlap"
    assert res.corpus == {"overlap": pytest.approx((1.0 + 1.0 + 0.0) / 3)}
    assert res.headline == {"overlap": pytest.approx(200.0 / 3)}
    assert res.per_example is None


def test_scoring_function_evaluator_passes_conformance():
    check_evaluator(Overlap())
    check_evaluator(Length())


def test_options_are_parsed_and_unknown_keys_refused():
    res = Length().score(["abc de"], [["x"]], unit="chars", per_example=True)
    assert res.headline == {"length": 6.0}
    assert res.per_example == [{"length": 6.0}]
    with pytest.raises(ConfigError, match="bad option 'colour'"):
        Length().score(["abc"], [["x"]], colour="red")
    with pytest.raises(ConfigError, match="Extra inputs"):
        Overlap().score(["abc"], [["x"]], per_example=True)  # base options declare none


def test_inputs_are_checked_before_scoring():
    with pytest.raises(DataError, match="2 predictions but 1 reference"):
        Overlap().score(["a", "b"], [["a"]])


def test_means_are_exact_and_order_free():
    rows = [{"x": 1e16, "n": 1}, {"x": 1.0, "n": 2}, {"x": -1e16, "n": 3}]
    assert average_rows(rows) == {"x": 1.0 / 3, "n": 2.0}
    assert average_rows([]) == {}
    assert weighted_mean([3.0, 1.0], [2.0, 2.0]) == 1.0
