"""Perplexity on the tiny model: finite, equal to HF's own loss, lower for memorised text."""

from __future__ import annotations

import math

import pytest
import torch
from adapterhub.plugins.evaluators.perplexity import PerplexityEvaluator

from adapterhub.errors import DataError, EvaluationError
from adapterhub.protocols.evaluator import EvaluatorContext
from adapterhub.testing.models import tiny_llama

MEMO = "the quick brown fox jumps over the lazy dog"
OTHER = "a completely different sentence about stock markets"


def ctx(model, tok, prompts=()):
    return EvaluatorContext(model=model, tokenizer=tok, prompts=list(prompts))


def test_equals_hf_loss_for_a_single_example():
    model, tok = tiny_llama(seed=0)
    prompt = "Q: what jumps?\nA: "
    res = PerplexityEvaluator().score([""], [[MEMO]], ctx(model, tok, [prompt]))
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    ids = tok(prompt + MEMO, add_special_tokens=False)["input_ids"]
    assert ids[: len(p_ids)] == p_ids  # byte-level: no merge across the boundary
    labels = [-100] * len(p_ids) + ids[len(p_ids) :]
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
    assert res.corpus["tokens"] == len(ids) - len(p_ids)
    assert res.corpus["perplexity"] == pytest.approx(math.exp(float(loss)), rel=1e-5)
    assert res.headline == {"perplexity": res.corpus["perplexity"]}
    assert res.lower_is_better == frozenset({"perplexity"})


def test_batching_and_padding_do_not_change_the_number():
    model, tok = tiny_llama(seed=1)
    refs = [[MEMO], [OTHER], ["short"], ["ÅÄÖ 東京 😀"]]
    prompts = ["p1: ", "", "a longer prompt here: ", "x"]
    one = PerplexityEvaluator().score([""] * 4, refs, ctx(model, tok, prompts), batch_size=1, per_example=True)
    many = PerplexityEvaluator().score([""] * 4, refs, ctx(model, tok, prompts), batch_size=4, per_example=True)
    assert math.isfinite(one.corpus["perplexity"]) and one.corpus["perplexity"] > 1
    assert many.corpus["perplexity"] == pytest.approx(one.corpus["perplexity"], rel=1e-5)
    for a, b in zip(one.per_example, many.per_example, strict=True):
        assert a["tokens"] == b["tokens"]
        assert a["perplexity"] == pytest.approx(b["perplexity"], rel=1e-5)


def test_memorised_text_has_lower_perplexity():
    torch.manual_seed(0)
    model, tok = tiny_llama(seed=0)
    ev = PerplexityEvaluator()
    before = ev.score([""], [[MEMO]], ctx(model, tok)).corpus["perplexity"]
    other_before = ev.score([""], [[OTHER]], ctx(model, tok)).corpus["perplexity"]
    ids = torch.tensor([tok(MEMO, add_special_tokens=False)["input_ids"]])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        opt.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    model.train()  # the evaluator must restore this mode
    after = ev.score([""], [[MEMO]], ctx(model, tok)).corpus["perplexity"]
    other_after = ev.score([""], [[OTHER]], ctx(model, tok)).corpus["perplexity"]
    assert model.training
    assert after < before / 5
    assert after < other_after
    assert math.isfinite(other_before)


def test_truncation_keeps_the_reference_end_of_the_window():
    model, tok = tiny_llama(seed=0)
    res = PerplexityEvaluator().score([""], [[MEMO]], ctx(model, tok, ["p" * 50]), max_length=20)
    assert res.corpus["tokens"] == 19  # reference cut to max_length - 1, prompt kept to 1 token


def test_needs_a_model_and_matching_prompts():
    model, tok = tiny_llama(seed=0)
    with pytest.raises(EvaluationError, match="needs the model"):
        PerplexityEvaluator().score(["a"], [["a"]])
    with pytest.raises(DataError, match="2 prompts for 1"):
        PerplexityEvaluator().score(["a"], [["a"]], ctx(model, tok, ["x", "y"]))
