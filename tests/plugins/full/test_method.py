"""full fine-tuning: every weight trains, the whole state is stored, detach restores."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from adapterhub.plugins.full import METHOD, FullConfig, adapterhub_register_methods

from adapterhub.errors import IncompatibleAdapterError
from adapterhub.protocols import Method
from adapterhub.testing.models import tiny_llama


def _model() -> Any:
    return tiny_llama(seed=0)[0]


def _inputs() -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(3))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@torch.no_grad()
def _logits(model: Any) -> torch.Tensor:
    model.eval()
    return model(**_inputs()).logits.clone()


def _train(model: Any, params: list[torch.nn.Parameter], steps: int = 2) -> None:
    opt = torch.optim.AdamW(params, lr=1e-2)
    model.train()
    for _ in range(steps):
        batch = _inputs()
        model(**batch, labels=batch["input_ids"]).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def _state(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_registered_and_declared() -> None:
    got: list[Any] = []
    adapterhub_register_methods(got.append)
    assert got == [METHOD] and isinstance(METHOD, Method)
    assert (METHOD.name, METHOD.kind) == ("full", "full")
    assert not METHOD.capabilities.hot_swap and not METHOD.capabilities.mixed_batch
    with pytest.raises(NotImplementedError, match="not hot-swappable"):
        METHOD.runtime(_model())


def test_train_store_and_restore() -> None:
    model = _model()
    model.requires_grad_(False)  # as a host would hand it over
    before, logits0 = _state(model), _logits(model)
    objects = dict(model.named_parameters())
    adapter = METHOD.attach(model, FullConfig())
    assert [id(p) for p in adapter.trainable_parameters()] == [id(p) for p in objects.values()]
    assert all(p.requires_grad for p in model.parameters())
    _train(model, adapter.trainable_parameters())
    assert not torch.equal(_logits(model), logits0)
    state = adapter.adapter_state()
    # the whole state dict, the tied lm_head once (like save_pretrained)
    assert list(state) == [k for k in model.state_dict() if k != "lm_head.weight"]
    assert all(not torch.equal(state[k], before[k]) for k in state)  # every weight trained
    adapter.detach()
    after = _state(model)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert dict(model.named_parameters()) == objects
    assert not any(p.requires_grad for p in model.parameters())  # flags restored
    assert torch.equal(_logits(model), logits0)


def test_load_round_trip_and_validate() -> None:
    model = _model()
    adapter = METHOD.attach(model, FullConfig())
    _train(model, adapter.trainable_parameters(), steps=1)
    state, trained = adapter.adapter_state(), _logits(model)
    fresh = _model()
    METHOD.load(fresh, FullConfig(), state)
    assert torch.equal(_logits(fresh), trained)
    for bad, needle in (
        ({k: v for k, v in state.items() if k != "model.norm.weight"}, "missing tensor 'model.norm.weight'"),
        ({**state, "extra.weight": torch.zeros(1)}, "unexpected tensor 'extra.weight'"),
        ({**state, "model.norm.weight": torch.zeros(3)}, "shape"),
    ):
        with pytest.raises(IncompatibleAdapterError, match=needle):
            METHOD.validate(_model(), FullConfig(), bad)


def test_not_restorable_saves_the_copy_and_refuses_detach() -> None:
    model = _model()
    adapter = METHOD.attach(model, FullConfig(restorable=False))
    _train(model, adapter.trainable_parameters(), steps=1)
    assert len(adapter.adapter_state()) == len(list(model.parameters()))
    with pytest.raises(IncompatibleAdapterError, match="restorable=False"):
        adapter.detach()
