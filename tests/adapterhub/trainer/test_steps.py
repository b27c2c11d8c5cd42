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


@pytest.mark.parametrize("method", ["lora", "prefix-tuning", "layer-selective", "full"])
def test_bf16_autocast_path_trains_every_builtin_method(method: str) -> None:
    # The CUDA trainer runs under bf16 autocast; CPU autocast runs the same code path, so a
    # method whose layers mix dtypes there (an in-place op on an autocast output, say)
    # fails here instead of only on a GPU. Found on an H100: LoRA's fused addmm_ did.
    from adapterhub.catalog import get_catalog

    model, tok = tiny_llama(seed=2)
    impl = get_catalog().method(method)
    cfg = {"layers": "0-1"} if method == "layer-selective" else {}
    adapter = impl.attach(model, impl.config_cls.model_validate(cfg))
    rows = tokenize_examples([Example("a prompt", "an answer"), Example("another, longer prompt", "xy")], tok, max_length=64)
    batch = collate(rows, pad_id=258)
    loss_fn = CompletionLoss(model, torch.device("cpu"), autocast=True)
    loss = loss_fn(batch)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    # parameters keep their dtype: autocast only changes the compute precision
    assert all(p.dtype == torch.float32 for p in model.parameters())
    del adapter
