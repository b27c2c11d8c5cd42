"""layer-selective training side: selection, freezing, storing, bit-exact detach, validate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from adapterhub.plugins.layer_select import (
    METHOD,
    LayerSelectiveConfig,
    adapterhub_register_methods,
)
from pydantic import ValidationError

from adapterhub.errors import IncompatibleAdapterError
from adapterhub.protocols import Method, TrainableAdapter
from adapterhub.safeio import load_safetensors, save_safetensors
from adapterhub.testing.models import tiny_llama


def _model(**overrides: Any) -> Any:
    return tiny_llama(seed=0, **overrides)[0]


def _inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 256, (2, 10), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@torch.no_grad()
def _logits(model: Any) -> torch.Tensor:
    model.eval()
    return model(**_inputs()).logits.clone()


def _train(model: Any, adapter: TrainableAdapter, steps: int = 3) -> None:
    opt = torch.optim.AdamW(adapter.trainable_parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        batch = _inputs()
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def _state(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_bit_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_registered_through_the_hook_and_is_a_method() -> None:
    got: list[Any] = []
    adapterhub_register_methods(got.append)
    assert got == [METHOD]
    assert isinstance(METHOD, Method)
    assert (METHOD.name, METHOD.kind) == ("layer-selective", "selective")
    assert METHOD.capabilities.hot_swap and not METHOD.capabilities.mixed_batch


def test_config_defaults_to_norms_and_is_strict() -> None:
    assert LayerSelectiveConfig().kinds == ("norm",)
    cfg = LayerSelectiveConfig(layers="1")
    assert cfg.kinds is None and cfg.layers == "1"
    with pytest.raises(ValidationError):
        LayerSelectiveConfig(rank=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="negative"):
        LayerSelectiveConfig(layers="-1")


def test_norms_only_train_store_and_restore_bit_exact() -> None:
    model = _model()
    before, logits0 = _state(model), _logits(model)
    objects = {n: p for n, p in model.named_parameters()}
    adapter = METHOD.attach(model, LayerSelectiveConfig(kinds=("norm",)))
    norms = [n for n, _ in model.named_parameters() if "norm" in n]
    assert [id(p) for p in adapter.trainable_parameters()] == [id(objects[n]) for n in norms]
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(norms)
    _train(model, adapter)
    assert not torch.equal(_logits(model), logits0)
    state = adapter.adapter_state()
    assert list(state) == norms
    for n, t in state.items():
        assert t.device.type == "cpu" and t.is_contiguous() and not t.requires_grad
        assert t.data_ptr() != objects[n].data_ptr()  # a clone, not a view of the live weight
        assert not torch.equal(t, before[n])  # every norm actually trained
    adapter.detach()
    _assert_bit_equal(_state(model), before)
    assert {n: id(p) for n, p in model.named_parameters()} == {n: id(p) for n, p in objects.items()}
    assert all(p.requires_grad for p in model.parameters())  # flags restored (HF default)
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(_logits(model), logits0)
    adapter.detach()  # idempotent


def test_bias_only_on_a_model_with_biases() -> None:
    model = _model(attention_bias=True, mlp_bias=True)
    before = _state(model)
    adapter = METHOD.attach(model, LayerSelectiveConfig(kinds=("bias",)))
    biases = [n for n, _ in model.named_parameters() if n.endswith(".bias")]
    assert len(biases) == 2 * 7
    _train(model, adapter)
    state = adapter.adapter_state()
    assert list(state) == biases
    for n, t in model.state_dict().items():  # only biases moved
        assert torch.equal(t, before[n]) == (n not in biases), n
    adapter.detach()
    _assert_bit_equal(_state(model), before)


def test_layer_range_touches_only_that_layer() -> None:
    model = _model()
    before = _state(model)
    adapter = METHOD.attach(model, LayerSelectiveConfig(layers="1"))
    _train(model, adapter)
    state = adapter.adapter_state()
    assert state and all(n.startswith("model.layers.1.") for n in state)
    assert len(state) == 9
    after = model.state_dict()
    assert all(torch.equal(after[n], before[n]) for n in before if not n.startswith("model.layers.1."))
    adapter.detach()
    _assert_bit_equal(_state(model), before)


def test_tied_lm_head_is_one_tensor() -> None:
    model = _model()
    before = _state(model)
    adapter = METHOD.attach(model, LayerSelectiveConfig(kinds=("lm_head",)))
    _train(model, adapter, steps=1)
    state = adapter.adapter_state()
    assert list(state) == ["model.embed_tokens.weight"]
    assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    adapter.detach()
    _assert_bit_equal(_state(model), before)


def test_save_load_round_trip_gives_identical_logits(tmp_path: Path) -> None:
    cfg = LayerSelectiveConfig(layers="0", kinds=("attention", "norm"))
    model = _model()
    adapter = METHOD.attach(model, cfg)
    _train(model, adapter)
    trained = _logits(model)
    save_safetensors(adapter.adapter_state(), tmp_path / "adapter.safetensors")
    loaded = load_safetensors(tmp_path / "adapter.safetensors")
    fresh = _model()
    base = _state(fresh)
    again = METHOD.load(fresh, cfg, loaded)
    assert torch.equal(_logits(fresh), trained)
    again.detach()
    _assert_bit_equal(_state(fresh), base)


def _trained_state(cfg: LayerSelectiveConfig) -> dict[str, torch.Tensor]:
    model = _model()
    adapter = METHOD.attach(model, cfg)
    _train(model, adapter, steps=1)
    return adapter.adapter_state()


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda s: s.pop(next(iter(s))), "missing tensor 'model.layers.0.input_layernorm.weight'$"),
        (lambda s: s.__setitem__("model.nope.weight", torch.ones(64)), "'model.nope.weight': the base model has no tensor"),
        (lambda s: s.__setitem__("model.layers.0.mlp.up_proj.weight", torch.ones(128, 64)), "not selected by the config"),
        (lambda s: s.__setitem__("model.norm.weight", torch.ones(65)), r"shape \(65,\), the base has \(64,\)"),
        (lambda s: s.__setitem__("model.norm.weight", torch.ones(64, dtype=torch.int32)), "dtype torch.int32"),
        (lambda s: s.__setitem__("model.norm.weight", torch.full((64,), float("nan"))), "NaN or infinite"),
    ],
)
def test_validate_rejects(mutate: Any, needle: str) -> None:
    cfg = LayerSelectiveConfig(kinds=("norm",))
    state = _trained_state(cfg)
    mutate(state)
    model = _model()
    before = _state(model)
    with pytest.raises(IncompatibleAdapterError, match=needle):
        METHOD.validate(model, cfg, state)
    with pytest.raises(IncompatibleAdapterError):
        METHOD.load(model, cfg, state)
    _assert_bit_equal(_state(model), before)
    assert all(p.requires_grad for p in model.parameters())  # a failed load attached nothing


def test_validate_maps_tied_alias_and_refuses_it_twice() -> None:
    cfg = LayerSelectiveConfig(kinds=("embedding",))
    emb = _trained_state(cfg)["model.embed_tokens.weight"]
    model = _model()
    adapter = METHOD.load(model, cfg, {"lm_head.weight": emb})
    assert torch.equal(model.model.embed_tokens.weight, emb)
    adapter.detach()
    with pytest.raises(IncompatibleAdapterError, match="given twice"):
        METHOD.validate(model, cfg, {"model.embed_tokens.weight": emb, "lm_head.weight": emb})


def test_config_that_does_not_fit_the_base_is_incompatible() -> None:
    with pytest.raises(IncompatibleAdapterError, match="out of range; the model has 2 layers"):
        METHOD.validate(_model(), LayerSelectiveConfig(layers="5"), {})


def test_load_casts_float_dtype_to_the_base() -> None:
    cfg = LayerSelectiveConfig(kinds=("norm",))
    state = {k: v.double() + 0.5 for k, v in _trained_state(cfg).items()}
    model = _model()
    adapter = METHOD.load(model, cfg, state)
    for n, t in state.items():
        p = model.get_parameter(n)
        assert p.dtype == torch.float32 and torch.equal(p, t.float())
    adapter.detach()


def test_found_in_the_catalog() -> None:
    from adapterhub.catalog import get_catalog

    assert get_catalog().method("layer-selective") is METHOD
