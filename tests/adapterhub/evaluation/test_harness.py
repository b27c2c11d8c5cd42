"""The harness on real task packs and the tiny model; ordering, evaluators, the cache."""

from __future__ import annotations

import pytest
from adapterhub.plugins.evaluators import AccuracyEvaluator, BleuEvaluator, ChrfEvaluator

from adapterhub.catalog import get_catalog
from adapterhub.errors import EvaluationError, UnknownNameError
from adapterhub.evaluation.cache import PredictionCache
from adapterhub.evaluation.generation import ModelGenerator
from adapterhub.evaluation.harness import evaluate_task, generate_all, run_eval, score_predictions


class LastWord:
    """A deterministic generator: answers with the prompt's last word (counts its calls)."""

    batch_size = 2
    settings = {"engine": "last-word"}

    def __init__(self) -> None:
        self.calls = 0
        self.prompts: list[str] = []

    def __call__(self, prompts, max_new_tokens):
        self.calls += 1
        self.prompts += prompts
        return [p.split()[-1] for p in prompts]


def test_generate_all_restores_order_and_chunks():
    gen = LastWord()
    prompts = [f"prompt number {'x' * i} w{i}" for i in range(7)]
    assert generate_all(gen, prompts, 4, progress=False) == [f"w{i}" for i in range(7)]
    assert gen.calls == 4  # chunks of the generator's batch size
    assert gen.prompts[0] == prompts[6]  # longest first


def test_real_task_with_tiny_model(tiny):
    task = get_catalog().task("sentiment-rt")
    gen = ModelGenerator(tiny.model, tiny.tokenizer, batch_size=2)
    res = evaluate_task(task, gen, limit=3, progress=False)
    examples = task.load("test")[:3]
    assert res.task == "sentiment-rt" and res.examples == 3 and res.max_new_tokens == task.max_new_tokens
    assert res.data_hash == task.data_hash("test") and not res.cached
    assert len(res.predictions) == 3
    direct = AccuracyEvaluator().score(res.predictions, [ex.refs() for ex in examples])
    assert res.results[0].corpus == direct.corpus
    assert res.headline() == direct.headline
    doc = res.to_dict(predictions=True)
    assert doc["metrics"] == direct.headline and doc["predictions"] == res.predictions


def test_task_evaluators_and_predictions_line_up():
    task = get_catalog().task("translate-sv-en")
    res = evaluate_task(task, LastWord(), limit=5, progress=False)
    examples = task.load("test")[:5]
    assert res.predictions == [ex.prompt.split()[-1] for ex in examples]
    refs = [ex.refs() for ex in examples]
    assert [r.evaluator for r in res.results] == ["bleu", "chrf"]
    assert res.results[0].corpus["score"] == BleuEvaluator().score(res.predictions, refs).corpus["score"]
    assert res.results[1].corpus["score"] == ChrfEvaluator().score(res.predictions, refs).corpus["score"]


def test_cache_second_run_does_not_generate(tmp_path):
    task = get_catalog().task("chitchat")
    cache = PredictionCache(tmp_path)
    key = {"base_weights_sha256": "0" * 64}
    first, second = LastWord(), LastWord()
    a = evaluate_task(task, first, limit=4, cache=cache, cache_key=key, progress=False)
    b = evaluate_task(task, second, limit=4, cache=cache, cache_key=key, progress=False)
    assert first.calls > 0 and second.calls == 0
    assert b.cached and not a.cached and b.predictions == a.predictions and b.headline() == a.headline()
    third = LastWord()
    evaluate_task(task, third, limit=3, cache=cache, cache_key=key, progress=False)  # other limit: a miss
    assert third.calls > 0


def test_model_aware_evaluator_needs_generator_context(tiny):
    task = get_catalog().task("chitchat")
    examples = task.load("test")[:2]
    with pytest.raises(EvaluationError, match="needs a model"):
        score_predictions(task, examples, ["a", "b"], LastWord(), ["perplexity"])
    gen = ModelGenerator(tiny.model, tiny.tokenizer)
    [res] = score_predictions(task, examples, ["a", "b"], gen, ["perplexity"])
    assert res.corpus["perplexity"] > 1


def test_run_eval_base_spec_uses_the_cache(home):
    first = run_eval("tiny-random-llama", ["sentiment-rt"], limit=2, batch_size=2, progress=False)
    again = run_eval("tiny-random-llama", ["sentiment-rt"], limit=2, batch_size=2, progress=False)
    assert first.base == "tiny-random-llama" and first.adapter is None
    assert [t.cached for t in first.tasks] == [False] and [t.cached for t in again.tasks] == [True]
    assert again.tasks[0].predictions == first.tasks[0].predictions
    assert any((home / "eval-cache").rglob("*.json"))


def test_unknown_task_fails_before_loading():
    with pytest.raises(UnknownNameError, match="unknown task 'nope'"):
        run_eval("no-such-base-either", ["nope"])
