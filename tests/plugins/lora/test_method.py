"""Training side of the ``lora`` method on a tiny Llama: attach, train, save/load, detach."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from adapterhub.plugins.lora import LoraConfig, LoraMethod
from adapterhub.plugins.lora.layers import LoraLinear

from adapterhub.errors import ConfigError, IncompatibleAdapterError
from adapterhub.protocols.method import Method, TrainableAdapter
from adapterhub.testing.models import tiny_llama

METHOD = LoraMethod()
IDS = torch.randint(0, 256, (3, 12), generator=torch.Generator().manual_seed(7))


def _logits(model: Any, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _randomise(adapter: Any, seed: int = 1, std: float = 0.05) -> None:
    # Fresh LoRA has B = 0 (a no-op); random A and B make equality tests meaningful.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def _snapshot(model: Any) -> dict[str, tuple[torch.Tensor, torch.Tensor, bool]]:
    return {n: (p, p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}


def test_protocols_and_declared_capabilities() -> None:
    assert isinstance(METHOD, Method)
    assert METHOD.name == "lora" and METHOD.kind == "reparameterization"
    caps = METHOD.capabilities
    assert (caps.hot_swap, caps.mixed_batch, caps.merge) == (True, True, True)
    model, _ = tiny_llama()
    adapter = METHOD.attach(model, LoraConfig())
    assert isinstance(adapter, TrainableAdapter)


def test_registered_through_the_plugin_hook() -> None:
    from adapterhub.catalog import get_catalog

    # Registered lazily (adapterhub.lazy.LazyMethod): the implementation is a LoraMethod.
    registered = get_catalog().method("lora")
    assert isinstance(registered, Method)
    assert isinstance(registered.load_method(), LoraMethod)  # type: ignore[attr-defined]


def test_attach_freezes_base_and_only_lora_requires_grad() -> None:
    model, _ = tiny_llama()
    model.lm_head.weight.requires_grad_(True)
    adapter = METHOD.attach(model, LoraConfig(r=4, target_modules="all-linear"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{t}.lora_{x}" for t in adapter.targets for x in "AB"}
    assert {id(p) for p in adapter.trainable_parameters()} == {id(p) for n, p in model.named_parameters() if p.requires_grad}
    state = adapter.adapter_state()
    assert set(state) == trainable
    a = state["model.layers.0.mlp.down_proj.lora_A"]
    assert a.shape == (4, 128) and state["model.layers.0.mlp.down_proj.lora_B"].shape == (64, 4)
    # A fresh adapter is a no-op (B = 0) and the base keys are unchanged while attached.
    assert all(torch.count_nonzero(v) == 0 for k, v in state.items() if k.endswith("lora_B"))
    assert "model.layers.0.self_attn.q_proj.weight" in model.state_dict()


def test_adamw_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    model, _ = tiny_llama()
    model.train()
    adapter = METHOD.attach(model, LoraConfig(r=8, alpha=16, target_modules="all-linear"))
    opt = torch.optim.AdamW(adapter.trainable_parameters(), lr=1e-2)
    ids = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(3))
    losses = []
    for _ in range(8):
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses
    frozen = [p for n, p in model.named_parameters() if "lora_" not in n]
    assert all(p.grad is None for p in frozen)


def test_save_load_round_trip_gives_identical_logits() -> None:
    model, _ = tiny_llama()
    cfg = LoraConfig(r=4, alpha=8, target_modules=("q_proj", "v_proj", "down_proj"))
    adapter = METHOD.attach(model, cfg)
    _randomise(adapter)
    trained = _logits(model)
    state = adapter.adapter_state()
    fresh, _ = tiny_llama()
    before = _logits(fresh)
    loaded = METHOD.load(fresh, cfg, state)
    assert torch.equal(_logits(fresh), trained)
    assert not torch.allclose(trained, before)
    assert all(torch.equal(loaded.adapter_state()[k], v) for k, v in state.items())


def test_detach_restores_the_base_bit_for_bit() -> None:
    model, _ = tiny_llama()
    modules = dict(model.named_modules())
    snap = _snapshot(model)
    base = _logits(model)
    adapter = METHOD.attach(model, LoraConfig(r=4, target_modules="all-linear"))
    _randomise(adapter)
    adapter.merge()  # detach must also undo a merge
    adapter.detach()
    assert dict(model.named_modules()).keys() == modules.keys()
    assert all(model.get_submodule(n) is m for n, m in modules.items() if n)
    after = dict(model.named_parameters())
    assert after.keys() == snap.keys()
    for n, (p, value, flag) in snap.items():
        assert after[n] is p and torch.equal(p, value) and p.requires_grad == flag, n
    assert torch.equal(_logits(model), base)
    adapter.detach()  # idempotent


def test_initialisation_is_deterministic_under_a_seed() -> None:
    states = []
    for _ in range(2):
        model, _ = tiny_llama()
        torch.manual_seed(123)
        states.append(METHOD.attach(model, LoraConfig(r=4)).adapter_state())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    a = states[0]["model.layers.0.self_attn.q_proj.lora_A"]
    bound = 1.0 / (64**0.5)  # kaiming_uniform(a=sqrt(5)) on fan_in 64, as in peft/nn.Linear
    assert a.abs().max() <= bound and a.std() > bound / 4


def test_merge_and_unmerge_are_exact() -> None:
    model, _ = tiny_llama()
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    adapter = METHOD.attach(model, LoraConfig(r=4, target_modules="all-linear"))
    _randomise(adapter)
    unmerged = _logits(model)
    adapter.merge()
    assert adapter.merged
    q = model.get_submodule("model.layers.0.self_attn.q_proj")
    assert not torch.equal(q.weight, weights["model.layers.0.self_attn.q_proj.weight"])
    assert (_logits(model) - unmerged).abs().max() <= 1e-5
    adapter.unmerge()
    assert not adapter.merged
    for n, p in model.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, weights[n]), n
    assert torch.equal(_logits(model), unmerged)


def test_dropout_only_on_the_lora_path_and_only_in_training() -> None:
    model, _ = tiny_llama()
    adapter = METHOD.attach(model, LoraConfig(r=4, dropout=0.5))
    _randomise(adapter)
    layer = model.get_submodule("model.layers.0.self_attn.q_proj")
    assert isinstance(layer, LoraLinear)
    x = torch.randn(2, 5, 64)
    base_out = torch.nn.functional.linear(x, layer.weight)
    layer.eval()
    with torch.no_grad():
        assert torch.equal(layer(x), layer(x))
        layer.train()
        torch.manual_seed(0)
        y1 = layer(x)
        torch.manual_seed(1)
        y2 = layer(x)
    assert not torch.equal(y1, y2)  # dropout is active in training
    layer.lora_B.data.zero_()
    with torch.no_grad():
        assert torch.equal(layer(x), base_out)  # the base path never sees dropout


def test_half_precision_base_keeps_fp32_lora_params() -> None:
    model, _ = tiny_llama(dtype=torch.bfloat16)
    adapter = METHOD.attach(model, LoraConfig(r=4))
    assert all(p.dtype == torch.float32 for p in adapter.trainable_parameters())
    _randomise(adapter)
    out = _logits(model)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    adapter.detach()
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


def test_attach_twice_is_refused() -> None:
    model, _ = tiny_llama()
    METHOD.attach(model, LoraConfig())
    with pytest.raises(ConfigError, match="already carries LoRA"):
        METHOD.attach(model, LoraConfig())


def test_attach_accepts_a_plain_mapping_and_rejects_bad_ones() -> None:
    model, _ = tiny_llama()
    adapter = METHOD.attach(model, {"r": 2})  # type: ignore[arg-type]
    assert adapter.config.r == 2
    adapter.detach()
    with pytest.raises(ConfigError, match="invalid lora config"):
        METHOD.attach(model, {"r": 0})  # type: ignore[arg-type]


# --- validate -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good() -> tuple[LoraConfig, dict[str, torch.Tensor]]:
    model, _ = tiny_llama()
    cfg = LoraConfig(r=4)
    adapter = METHOD.attach(model, cfg)
    _randomise(adapter)
    return cfg, adapter.adapter_state()


def _check(cfg: LoraConfig, tensors: dict[str, torch.Tensor]) -> None:
    model, _ = tiny_llama()
    snap = _snapshot(model)
    try:
        METHOD.validate(model, cfg, tensors)
    finally:
        assert all(torch.equal(p, v) for _, (p, v, _) in snap.items())


def test_validate_accepts_a_good_adapter(good: tuple[LoraConfig, dict[str, torch.Tensor]]) -> None:
    _check(*good)


def test_validate_wrong_rank(good: tuple[LoraConfig, dict[str, torch.Tensor]]) -> None:
    cfg, tensors = good
    with pytest.raises(IncompatibleAdapterError, match=r"'model.layers.0.self_attn.q_proj.lora_A' has shape \(4, 64\), expected \(8, 64\)"):
        _check(LoraConfig(r=8), tensors)


def test_validate_missing_key(good: tuple[LoraConfig, dict[str, torch.Tensor]]) -> None:
    cfg, tensors = good
    bad = dict(tensors)
    del bad["model.layers.1.self_attn.v_proj.lora_B"]
    with pytest.raises(IncompatibleAdapterError, match="missing tensor 'model.layers.1.self_attn.v_proj.lora_B'"):
        _check(cfg, bad)


def test_validate_unexpected_key(good: tuple[LoraConfig, dict[str, torch.Tensor]]) -> None:
    cfg, tensors = good
    bad = {**tensors, "model.layers.0.mlp.up_proj.lora_A": torch.zeros(4, 64)}
    with pytest.raises(IncompatibleAdapterError, match="unexpected tensor 'model.layers.0.mlp.up_proj.lora_A'"):
        _check(cfg, bad)


def test_validate_nan(good: tuple[LoraConfig, dict[str, torch.Tensor]]) -> None:
    cfg, tensors = good
    bad = dict(tensors)
    key = "model.layers.1.self_attn.q_proj.lora_B"
    bad[key] = bad[key].clone()
    bad[key][3, 1] = float("nan")
    with pytest.raises(IncompatibleAdapterError, match=f"'{key}' holds NaN"):
        _check(cfg, bad)


def test_validate_wrong_shape_on_last_layer(good: tuple[LoraConfig, dict[str, torch.Tensor]]) -> None:
    cfg, tensors = good
    bad = dict(tensors)
    key = "model.layers.1.self_attn.v_proj.lora_B"
    bad[key] = torch.zeros(33, 4)
    with pytest.raises(IncompatibleAdapterError, match=rf"'{key}' has shape \(33, 4\), expected \(32, 4\)"):
        _check(cfg, bad)


def test_validate_integer_dtype(good: tuple[LoraConfig, dict[str, torch.Tensor]]) -> None:
    cfg, tensors = good
    key = "model.layers.0.self_attn.q_proj.lora_A"
    bad = {**tensors, key: torch.zeros(4, 64, dtype=torch.int32)}
    with pytest.raises(IncompatibleAdapterError, match="expected a floating dtype"):
        _check(cfg, bad)


def test_validate_pattern_not_in_model(good: tuple[LoraConfig, dict[str, torch.Tensor]]) -> None:
    _, tensors = good
    with pytest.raises(IncompatibleAdapterError, match="'c_attn' matches no nn.Linear"):
        _check(LoraConfig(r=4, target_modules=("c_attn",)), tensors)


def test_load_refuses_bad_tensors_without_touching_the_model(good: tuple[LoraConfig, dict[str, torch.Tensor]]) -> None:
    cfg, tensors = good
    model, _ = tiny_llama()
    modules = dict(model.named_modules())
    bad = {k: v for k, v in tensors.items() if not k.startswith("model.layers.1.")}
    with pytest.raises(IncompatibleAdapterError):
        METHOD.load(model, cfg, bad)
    assert dict(model.named_modules()) == modules
    assert all(p.requires_grad for p in model.parameters())
