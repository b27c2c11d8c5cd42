"""Every built-in evaluator passes the evaluator conformance suite of adapterhub.testing."""

from __future__ import annotations

import pytest
from adapterhub.plugins.evaluators import builtin_evaluators

from adapterhub.protocols.evaluator import EvaluatorContext
from adapterhub.testing.evaluators import (
    EVALUATOR_CHECKS,
    ConformanceError,
    check_evaluator,
    run_check,
)
from adapterhub.testing.models import tiny_llama

SIMPLE = [e for e in builtin_evaluators() if e.name not in ("perplexity", "evaluate")]


@pytest.mark.parametrize("check", EVALUATOR_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("evaluator", SIMPLE, ids=lambda e: e.name)
def test_builtin_passes(evaluator, check):
    run_check(check, evaluator)


def test_perplexity_passes_with_a_model_context():
    model, tok = tiny_llama(seed=0)
    [ppl] = [e for e in builtin_evaluators() if e.name == "perplexity"]
    check_evaluator(ppl, context_factory=lambda prompts: EvaluatorContext(model=model, tokenizer=tok, prompts=list(prompts)))


def test_evaluate_bridge_passes_with_a_local_metric(tmp_path, hf_modules_cache):
    from test_hf_evaluate import LOCAL_METRIC

    (tmp_path / "mymatch").mkdir()
    (tmp_path / "mymatch" / "mymatch.py").write_text(LOCAL_METRIC)
    [bridge] = [e for e in builtin_evaluators() if e.name == "evaluate"]
    check_evaluator(bridge, options={"metric": str(tmp_path / "mymatch")})


class _Broken:
    """An evaluator that breaks the rules, to prove the suite can fail."""

    name = "broken"
    description = "returns a 0–1 headline without marking it and ignores misalignment"
    needs_model = False

    def score(self, predictions, references, context=None, **options):
        from adapterhub.protocols.evaluator import EvalResult

        return EvalResult("broken", {"x": 1}, {"x": 150.0})


def test_suite_catches_a_broken_evaluator():
    with pytest.raises(ConformanceError, match="outside 0–100"):
        check_evaluator(_Broken())
