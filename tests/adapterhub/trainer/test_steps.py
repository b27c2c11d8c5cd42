from __future__ import annotations

import pytest
import torch

from adapterhub.protocols.task import Example
from adapterhub.testing.models import tiny_llama
from adapterhub.trainer.data import collate, tokenize_examples
from adapterhub.trainer.steps import CompletionLoss, completion_tokens, eval_loss, lr_factor


def test_lr_schedule() -> None:
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(55, 100, 10, "linear") == pytest.approx(0.5)
    assert lr_factor(99, 100, 0, "constant") == 1.0
    assert 0 < lr_factor(99, 100, 0, "cosine") < 0.01


def test_completion_only_logits_give_the_same_loss_as_full_logits() -> None:
    model, tok = tiny_llama(seed=1)
    rows = tokenize_examples([Example("a prompt", "an answer"), Example("another, longer prompt", "x")], tok, max_length=64)
    batch = collate(rows, pad_id=258)
    sliced = CompletionLoss(model, torch.device("cpu"))
    assert sliced.sliced
    full = CompletionLoss(model, torch.device("cpu"))
    full.sliced = False
    a, b = sliced(batch), full(batch)
    assert sliced.sliced  # the boolean logits_to_keep was honoured, not silently ignored
    assert torch.allclose(a, b, rtol=1e-5)
    # and both equal transformers' own label loss (a token mean) times the token count
    hf = model(**batch).loss * int((batch["labels"][:, 1:] != -100).sum())
    assert torch.allclose(a, hf, rtol=1e-5)


def test_completion_tokens_and_eval_loss_is_a_token_mean() -> None:
    model, tok = tiny_llama(seed=1)
    rows = tokenize_examples([Example("p", "abc"), Example("q", "de")], tok, max_length=64)
    assert completion_tokens(rows) == 4 + 3  # completion bytes + <|im_end|> each
    model.train()
    fn = CompletionLoss(model, torch.device("cpu"))
    total = float(fn(collate(rows, pad_id=258)).detach())
    assert eval_loss(fn, rows, batch_size=1, pad_id=258) == pytest.approx(total / 7, rel=1e-5)
    assert model.training  # eval_loss puts the mode back
