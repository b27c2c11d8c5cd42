"""Conformance suite for evaluator plugins.

Any evaluator (built-in or third-party) should pass these checks::

    from adapterhub.testing.evaluators import EVALUATOR_CHECKS, run_check

    @pytest.mark.parametrize("check", EVALUATOR_CHECKS, ids=lambda c: c.__name__)
    def test_my_evaluator(check):
        run_check(check, MyEvaluator())

or simply ``check_evaluator(MyEvaluator())``. A model-aware evaluator
(``needs_model=True``) needs ``context_factory``: given the examples' prompts it
returns the :class:`EvaluatorContext` (e.g. built from ``tiny_llama()``).

What is checked: the result's shape (types, finite 0–100-style headline numbers,
JSON-serialisable ``corpus``, per-example length), determinism, empty predictions,
Unicode text, several references per example (an exact match among the references never
scores below the lone wrong reference), and a clear ``ValueError`` when predictions and
references do not line up.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from adapterhub.protocols.evaluator import EvalResult, Evaluator, EvaluatorContext

ContextFactory = Callable[[Sequence[str]], EvaluatorContext]

PROMPTS = ("Summarise: the cat sat on the mat.", "Translate: god morgon", "Label: great film!")
PREDICTIONS = ("the cat sat on the mat", "good morning to you", "positive")
REFERENCES: tuple[tuple[str, ...], ...] = (
    ("a cat sat on the mat",),
    ("good morning", "morning to you"),
    ("positive",),
)
UNICODE_PREDICTIONS = ("Smörgåsbord är gott på morgonen", "東京は晴れです 😀", "naïve café — «quoted»")
UNICODE_REFERENCES: tuple[tuple[str, ...], ...] = (
    ("Smörgåsbord är gott",),
    ("東京は晴れ", "今日の東京は晴れです"),
    ("naïve café",),
)


class ConformanceError(AssertionError):
    """An evaluator broke the evaluator contract (message says which rule)."""


def _fail(evaluator: Evaluator, rule: str) -> ConformanceError:
    return ConformanceError(f"evaluator {getattr(evaluator, 'name', evaluator)!r}: {rule}")


def _score(
    evaluator: Evaluator,
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    prompts: Sequence[str],
    context_factory: ContextFactory | None,
    options: dict[str, Any],
) -> EvalResult:
    context = context_factory(prompts) if (evaluator.needs_model and context_factory is not None) else None
    if evaluator.needs_model and context is None:
        raise _fail(evaluator, "needs_model=True: pass context_factory to the conformance suite")
    return evaluator.score(list(predictions), [list(r) for r in references], context, **options)


def check_attributes(evaluator: Evaluator, context_factory: ContextFactory | None = None, options: dict[str, Any] | None = None) -> None:
    """Has a non-empty ``name``, a ``description`` and a bool ``needs_model``."""
    if not isinstance(getattr(evaluator, "name", None), str) or not evaluator.name:
        raise _fail(evaluator, "needs a non-empty str `name`")
    if not isinstance(getattr(evaluator, "description", None), str):
        raise _fail(evaluator, "needs a str `description`")
    if not isinstance(getattr(evaluator, "needs_model", None), bool):
        raise _fail(evaluator, "needs a bool `needs_model`")
    if not isinstance(evaluator, Evaluator):
        raise _fail(evaluator, "does not implement the Evaluator protocol")


def check_result_shape(evaluator: Evaluator, context_factory: ContextFactory | None = None, options: dict[str, Any] | None = None) -> None:
    """EvalResult with str evaluator, JSON-able corpus, finite float headline, sane extras."""
    res = _score(evaluator, PREDICTIONS, REFERENCES, PROMPTS, context_factory, dict(options or {}))
    validate_result(evaluator, res, len(PREDICTIONS))


def validate_result(evaluator: Evaluator, res: Any, n: int) -> None:
    """The structural rules any result must satisfy (also usable on real runs)."""
    if not isinstance(res, EvalResult):
        raise _fail(evaluator, f"score() returned {type(res).__name__}, not EvalResult")
    if not isinstance(res.evaluator, str) or not res.evaluator:
        raise _fail(evaluator, "EvalResult.evaluator must be a non-empty str")
    if not isinstance(res.corpus, dict) or not res.corpus:
        raise _fail(evaluator, "EvalResult.corpus must be a non-empty dict")
    try:
        json.dumps(res.corpus, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise _fail(evaluator, f"EvalResult.corpus is not JSON-serialisable ({exc})") from None
    if not isinstance(res.headline, dict) or not res.headline:
        raise _fail(evaluator, "EvalResult.headline must be a non-empty dict of metric → float")
    for key, value in res.headline.items():
        if not isinstance(key, str) or not isinstance(value, float) or not math.isfinite(value):
            raise _fail(evaluator, f"headline[{key!r}] = {value!r} must be a finite float")
        if key not in res.lower_is_better and not (-1e-9 <= value <= 100.0 + 1e-9):
            raise _fail(evaluator, f"headline[{key!r}] = {value} is outside 0–100 (mark it lower_is_better if it is a loss)")
    if not set(res.lower_is_better) <= set(res.headline):
        raise _fail(evaluator, "lower_is_better names metrics that are not in headline")
    if res.per_example is not None and len(res.per_example) != n:
        raise _fail(evaluator, f"per_example has {len(res.per_example)} rows for {n} examples")


def check_deterministic(evaluator: Evaluator, context_factory: ContextFactory | None = None, options: dict[str, Any] | None = None) -> None:
    """Same inputs, same numbers (twice in a row)."""
    a = _score(evaluator, PREDICTIONS, REFERENCES, PROMPTS, context_factory, dict(options or {}))
    b = _score(evaluator, PREDICTIONS, REFERENCES, PROMPTS, context_factory, dict(options or {}))
    if a.headline != b.headline or json.dumps(a.corpus, sort_keys=True) != json.dumps(b.corpus, sort_keys=True):
        raise _fail(evaluator, f"not deterministic: {a.headline} then {b.headline}")


def check_empty_predictions(evaluator: Evaluator, context_factory: ContextFactory | None = None, options: dict[str, Any] | None = None) -> None:
    """Empty predictions (a model that said nothing) score, finitely, without raising."""
    res = _score(evaluator, [""] * len(REFERENCES), REFERENCES, PROMPTS, context_factory, dict(options or {}))
    validate_result(evaluator, res, len(REFERENCES))


def check_unicode(evaluator: Evaluator, context_factory: ContextFactory | None = None, options: dict[str, Any] | None = None) -> None:
    """Non-ASCII text (Swedish, Japanese, emoji, guillemets) scores without raising."""
    res = _score(evaluator, UNICODE_PREDICTIONS, UNICODE_REFERENCES, PROMPTS, context_factory, dict(options or {}))
    validate_result(evaluator, res, len(UNICODE_PREDICTIONS))


def check_multiple_references(evaluator: Evaluator, context_factory: ContextFactory | None = None, options: dict[str, Any] | None = None) -> None:
    """Varying reference counts work, and an exact match among them scores at least as well."""
    preds = ["the quick brown fox jumps over the dog", "positive"]
    lone = [["a slow green turtle sleeps"], ["negative"]]
    with_match = [["a slow green turtle sleeps", "the quick brown fox jumps over the dog"], ["negative", "positive", "neutral"]]
    prompts = PROMPTS[:2]
    a = _score(evaluator, preds, lone, prompts, context_factory, dict(options or {}))
    b = _score(evaluator, preds, with_match, prompts, context_factory, dict(options or {}))
    validate_result(evaluator, b, 2)
    if evaluator.needs_model:
        return  # e.g. perplexity scores the first reference only; nothing to compare
    for key, value in a.headline.items():
        better = b.headline.get(key)
        if better is None:
            raise _fail(evaluator, f"headline key {key!r} disappears with several references")
        worse = better > value if key in a.lower_is_better else better < value
        if worse:
            raise _fail(evaluator, f"{key}: adding an exact-match reference lowered the score ({value} → {better})")


def check_misaligned_inputs(evaluator: Evaluator, context_factory: ContextFactory | None = None, options: dict[str, Any] | None = None) -> None:
    """More predictions than references is a ValueError (adapterhub: DataError), not a crash."""
    try:
        _score(evaluator, PREDICTIONS, REFERENCES[:2], PROMPTS, context_factory, dict(options or {}))
    except ValueError:
        return
    except Exception as exc:  # noqa: BLE001 - any other type breaks the contract
        raise _fail(evaluator, f"misaligned inputs raised {type(exc).__name__}, expected ValueError") from None
    raise _fail(evaluator, "3 predictions with 2 references did not raise")


Check = Callable[..., None]
EVALUATOR_CHECKS: tuple[Check, ...] = (
    check_attributes,
    check_result_shape,
    check_deterministic,
    check_empty_predictions,
    check_unicode,
    check_multiple_references,
    check_misaligned_inputs,
)


def run_check(check: Check, evaluator: Evaluator, context_factory: ContextFactory | None = None, options: dict[str, Any] | None = None) -> None:
    check(evaluator, context_factory, options)


def check_evaluator(evaluator: Evaluator, context_factory: ContextFactory | None = None, options: dict[str, Any] | None = None) -> None:
    """Run every check; raises ConformanceError naming the first broken rule."""
    for check in EVALUATOR_CHECKS:
        check(evaluator, context_factory, options)


__all__ = [
    "EVALUATOR_CHECKS",
    "ConformanceError",
    "check_attributes",
    "check_deterministic",
    "check_empty_predictions",
    "check_evaluator",
    "check_misaligned_inputs",
    "check_multiple_references",
    "check_result_shape",
    "check_unicode",
    "run_check",
    "validate_result",
]
