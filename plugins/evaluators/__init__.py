"""Built-in evaluators, one module per metric family.

``rouge`` (rouge-score), ``bleu`` and ``chrf`` (sacrebleu), ``exact_match`` and
``accuracy`` (normalised answer matching), ``perplexity`` (model-aware) and the
``evaluate`` bridge to Hugging Face ``evaluate`` metrics. Registered through the same
hook as any third-party evaluator plugin. The metric libraries are imported only when
an evaluator scores, so loading this plugin costs next to nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from adapterhub.hookspecs import hookimpl

from .hf_evaluate import EvaluateBridge
from .match import AccuracyEvaluator, ExactMatchEvaluator
from .perplexity import PerplexityEvaluator
from .rouge import RougeEvaluator
from .sacrebleu_metrics import BleuEvaluator, ChrfEvaluator

if TYPE_CHECKING:
    from adapterhub.protocols.evaluator import Evaluator


def builtin_evaluators() -> list[Evaluator]:
    """Fresh instances of every built-in evaluator (they hold no state)."""
    return [
        RougeEvaluator(),
        BleuEvaluator(),
        ChrfEvaluator(),
        ExactMatchEvaluator(),
        AccuracyEvaluator(),
        PerplexityEvaluator(),
        EvaluateBridge(),
    ]


@hookimpl
def adapterhub_register_evaluators(register: Callable[[Evaluator], None]) -> None:
    for evaluator in builtin_evaluators():
        register(evaluator)


__all__ = [
    "AccuracyEvaluator",
    "BleuEvaluator",
    "ChrfEvaluator",
    "EvaluateBridge",
    "ExactMatchEvaluator",
    "PerplexityEvaluator",
    "RougeEvaluator",
    "adapterhub_register_evaluators",
    "builtin_evaluators",
]
