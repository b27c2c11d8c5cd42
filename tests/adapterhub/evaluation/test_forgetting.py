"""Forgetting end to end on the tiny model: rows, flags, perplexity, cache, storage."""

from __future__ import annotations

import math

import pytest
import torch
from adapterhub.plugins.evaluators.perplexity import PerplexityEvaluator

from adapterhub.errors import EvaluationError
from adapterhub.evaluation import forgetting as fg
from adapterhub.evaluation.cache import PredictionCache
from adapterhub.evaluation.forgetting import (
    compare,
    general_text_sample,
    run_forgetting,
    run_forgetting_detailed,
    save_forgetting,
)
from adapterhub.evaluation.generation import ModelGenerator
from adapterhub.evaluation.harness import TaskEvaluation
from adapterhub.evaluation.loading import resolve_adapter
from adapterhub.manifest import ForgettingReport, read_manifest
from adapterhub.protocols.evaluator import EvalResult
from adapterhub.protocols.task import Example
from adapterhub.testing.adapters import make_adapter

PROMPTS = ["Say hello.", "Count: one two", "Name a colour, please:", "Hi there", "Translate 'katt' to English."]


def sharpen(model: torch.nn.Module) -> None:
    # Decisive, prompt-dependent greedy outputs (see test_generation.sharpen).
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def _evaluation(task: str, headline: dict[str, float], lower: frozenset[str] = frozenset()) -> TaskEvaluation:
    res = EvalResult("x", {"x": 1}, headline, lower_is_better=lower)
    return TaskEvaluation(task, "test", 3, "0" * 64, 4, ["a", "b", "c"], [res], 0.1)


def test_compare_flags_drops_over_threshold_only():
    base = _evaluation("t", {"accuracy": 80.0, "rougeL": 30.0, "bleu": 10.0, "perplexity": 5.0}, frozenset({"perplexity"}))
    adapted = _evaluation("t", {"accuracy": 77.9, "rougeL": 28.0, "bleu": 25.0, "perplexity": 9.0}, frozenset({"perplexity"}))
    rows = {r.metric: r for r in compare("t", base, adapted, threshold=2.0)}
    assert set(rows) == {"accuracy", "rougeL", "bleu"}  # loss-style metrics are not rows
    assert rows["accuracy"].flagged and rows["accuracy"].delta == pytest.approx(-2.1)
    assert not rows["rougeL"].flagged  # exactly 2 points is not "more than 2"
    assert not rows["bleu"].flagged and rows["bleu"].delta == pytest.approx(15.0)


def _scored(task: str, correct: list[int]) -> TaskEvaluation:
    """A real accuracy result (per-example statistics included) with the given outcomes."""
    from adapterhub.evaluation.scoring import resolve_evaluator

    evaluator, options = resolve_evaluator("accuracy")
    preds = ["yes" if c else "no" for c in correct]
    res = evaluator.score(preds, [["yes"]] * len(correct), **options)
    return TaskEvaluation(task, "test", len(correct), "0" * 64, 4, preds, [res], 0.1)


def _verdict(base: list[int], adapted: list[int]) -> tuple[str | None, object]:
    [row] = compare("t", _scored("t", base), _scored("t", adapted), threshold=2.0)
    return row.verdict, row


def test_verdict_clear_drop_is_forgotten():
    # 200 examples, the adapter loses 40 answers the base had and gains none: −20 points,
    # and the paired interval sits far below −2.
    base = [1] * 150 + [0] * 50
    adapted = [0] * 40 + [1] * 110 + [0] * 50
    verdict, row = _verdict(base, adapted)
    assert verdict == "forgotten"
    assert row.flagged and row.n == 200 and row.delta == pytest.approx(-20.0)
    assert row.ci_high < -2 and row.ci_low <= row.delta <= row.ci_high
    assert row.resolution == pytest.approx((row.ci_high - row.ci_low) / 2)


def test_verdict_noisy_drop_is_unresolved_not_flagged():
    # 8 examples, −12.5 points (one answer lost): a point estimate far over the threshold,
    # but the interval runs from −37.5 to 0 and cannot tell it from no change.
    base = [1, 1, 1, 0, 1, 0, 1, 1]
    adapted = [0, 1, 1, 0, 1, 0, 1, 1]
    verdict, row = _verdict(base, adapted)
    assert row.delta == pytest.approx(-12.5)
    assert verdict == "unresolved" and not row.flagged
    assert row.ci_low < -2 <= row.ci_high


def test_verdict_gain_is_kept():
    base = [0] * 30 + [1] * 30
    adapted = [1] * 20 + [0] * 10 + [1] * 30
    verdict, row = _verdict(base, adapted)
    assert verdict == "kept" and row.delta > 0 and row.ci_low >= -2 and not row.flagged


def test_paired_verdict_is_reproducible():
    base = [1, 0, 1, 1, 0, 1, 1, 0, 1, 1] * 3
    adapted = [1, 0, 0, 1, 0, 1, 1, 0, 1, 0] * 3
    assert _verdict(base, adapted)[1] == _verdict(base, adapted)[1]


def test_general_text_sample_is_fixed():
    texts, info = general_text_sample()
    again, info2 = general_text_sample()
    assert texts == again and info == info2
    assert info["sources"] == ["chitchat:validation[:24]", "faq-instruct:validation[:24]"]
    assert info["texts"] == len(texts) and 40 <= len(texts) <= 48


@pytest.fixture
def scenario(tiny, tmp_path, memory_task):
    """A base whose outputs are the references of an 'own' task (base scores 100), and a
    strong random LoRA adapter for that task (it will score lower: forgetting)."""
    sharpen(tiny.model)
    outputs = ModelGenerator(tiny.model, tiny.tokenizer)(PROMPTS, 6)
    own = memory_task("echo-own", [Example(p, o) for p, o in zip(PROMPTS, outputs, strict=True)])
    other = memory_task("echo-other", [Example(p, p) for p in PROMPTS[:3]], evaluators=("exact_match", "chrf"))
    adapter_dir = tmp_path / "adapter"
    make_adapter("lora", tiny.model, adapter_dir, config={"r": 4}, scale=0.6, task="echo-own", name="echo")
    return tiny, own, other, adapter_dir


def test_report_rows_flags_perplexity_and_base_cache(scenario, tmp_path, monkeypatch):
    tiny, own, other, adapter_dir = scenario
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    calls = {"base_generate": 0, "perplexity": 0}
    real_call, real_score = ModelGenerator.__call__, PerplexityEvaluator.score

    def counting_call(self, prompts, max_new_tokens):
        calls["base_generate"] += 1
        return real_call(self, prompts, max_new_tokens)

    def counting_score(self, *a, **k):
        calls["perplexity"] += 1
        return real_score(self, *a, **k)

    monkeypatch.setattr(ModelGenerator, "__call__", counting_call)
    monkeypatch.setattr(PerplexityEvaluator, "score", counting_score)
    cache = PredictionCache(tmp_path / "cache")
    run = run_forgetting_detailed(tiny, adapter_dir, [own, other], limit=5, cache=cache, progress=False)
    rep = run.report
    assert isinstance(rep, ForgettingReport) and rep.threshold == 2.0
    rows = {(r.task, r.metric): r for r in rep.rows}
    assert set(rows) == {("echo-own", "exact_match"), ("echo-other", "exact_match"), ("echo-other", "chrf")}
    own_row = rows[("echo-own", "exact_match")]
    assert own_row.base == 100.0
    assert own_row.adapted < 98.0 and own_row.flagged and own_row.delta == pytest.approx(own_row.adapted - 100.0)
    for r in rep.rows:  # flagged now means forgotten: the whole paired interval below −2
        assert r.flagged == (r.verdict == "forgotten") and r.ci_low is not None and r.ci_high is not None
        assert r.ci_low <= r.delta <= r.ci_high and r.n == (5 if r.task == "echo-own" else 3)
        assert r.flagged == (r.ci_high < -2.0)
    assert math.isfinite(rep.perplexity_base) and math.isfinite(rep.perplexity_adapted)
    assert rep.perplexity_base != rep.perplexity_adapted
    gen = rep.generation
    assert gen["own_task"] == "echo-own" and gen["limit"] == 5
    assert gen["tasks"]["echo-other"]["examples"] == 3
    assert gen["base"]["engine"] == "hf-generate" and gen["adapted"]["engine"] == "adapterhub-host"
    assert gen["perplexity_sample"]["texts"] > 0 and rep.created is not None
    assert calls["base_generate"] > 0 and calls["perplexity"] == 2
    # the caller's base is untouched: same modules, same bits
    assert all(torch.equal(before[k], v) for k, v in tiny.model.state_dict().items())
    assert type(tiny.model.model.layers[0].self_attn.q_proj) is torch.nn.Linear

    # second adapter evaluation of the same base: base outputs and perplexity come from the cache
    calls.update(base_generate=0, perplexity=0)
    again = run_forgetting(tiny, adapter_dir, [own, other], limit=5, cache=cache, progress=False)
    assert calls == {"base_generate": 0, "perplexity": 1}
    assert [r.model_dump() for r in again.rows] == [r.model_dump() for r in rep.rows]
    assert all(run.base[t].cached is False for t in run.base)


def test_per_task_limits(scenario):
    # --resolve sizes each task on its own: limits override limit per task.
    tiny, own, other, adapter_dir = scenario
    run = run_forgetting_detailed(tiny, adapter_dir, [own, other], limit=2, limits={"echo-own": 4}, cache=False, progress=False)
    assert {r.task: r.n for r in run.report.rows} == {"echo-own": 4, "echo-other": 2}
    assert run.report.generation["tasks"]["echo-own"]["examples"] == 4


def test_full_finetune_adapter_path(tiny, tmp_path, memory_task):
    sharpen(tiny.model)
    task = memory_task("echo", [Example(p, p) for p in PROMPTS[:2]])
    make_adapter("full", tiny.model, tmp_path / "full", scale=0.3, task="echo")
    run = run_forgetting_detailed(tiny, tmp_path / "full", [task], limit=2, cache=False, progress=False)
    assert run.report.generation["adapted"]["engine"] == "hf-generate"
    assert [r.metric for r in run.report.rows] == ["exact_match"]
    assert run.report.perplexity_adapted != run.report.perplexity_base


def test_save_into_manifest_and_into_a_registry_record(scenario, home):
    tiny, own, _, adapter_dir = scenario
    report = run_forgetting(tiny, adapter_dir, [own], limit=2, cache=False, progress=False)
    where = save_forgetting(resolve_adapter(adapter_dir), report)
    assert "manifest" in where
    assert read_manifest(adapter_dir).forgetting == report

    from adapterhub.registry.client import Registry

    ref = Registry(progress=False).push(adapter_dir, "team/echo", "1.0.0")
    source = resolve_adapter(ref)
    assert source.ref == "team/echo@1.0.0"
    where = save_forgetting(source, report)
    assert where == "evaluation record of team/echo@1.0.0"
    records = Registry(progress=False).evaluations(ref)
    assert records[-1]["kind"] == "forgetting"
    assert ForgettingReport.model_validate(records[-1]["report"]) == report


def test_refuses_bad_threshold_and_wrong_base(scenario, tmp_path):
    tiny, own, _, adapter_dir = scenario
    with pytest.raises(EvaluationError, match="threshold"):
        run_forgetting(tiny, adapter_dir, [own], threshold=-1)
    from adapterhub.errors import IncompatibleAdapterError
    from adapterhub.protocols.basemodel import LoadedBase
    from adapterhub.testing.models import tiny_llama

    other_model, tok = tiny_llama(seed=5)
    with pytest.raises(IncompatibleAdapterError, match="different weights"):
        run_forgetting(LoadedBase("tiny-random-llama", other_model, tok), adapter_dir, [own], cache=False, progress=False)


def test_default_tasks_put_own_task_first():
    names = fg.default_tasks("summarize-aclsum")
    assert names[0] == "summarize-aclsum"
    assert set(names) >= {"sentiment-rt", "faq-instruct", "translate-sv-en", "chitchat"} and len(names) == len(set(names))
