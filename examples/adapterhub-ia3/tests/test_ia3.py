"""Tests of the IA³ plugin, written the way a third-party plugin author would.

Run after installing the plugin (``pip install -e examples/adapterhub-ia3`` or
``adapterhub install -e examples/adapterhub-ia3``): the plugin must be found through its
entry point, exactly as adapterhub will find it. Models come from
``adapterhub.testing`` (a tiny seeded Llama), artifacts from ``adapterhub.artifact``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from adapterhub_ia3 import IA3Config, IA3Method, IA3Runtime

from adapterhub.artifact import read_adapter, write_adapter
from adapterhub.catalog import get_catalog, reset_catalog
from adapterhub.errors import AdapterUnloadedError, ConfigError, IncompatibleAdapterError
from adapterhub.fingerprint import fingerprint
from adapterhub.testing import tiny_llama
from adapterhub.testing.methods import MethodCase, conformance_params, run_check

pytest_plugins = ["adapterhub.testing.fixtures"]

PROMPTS = torch.tensor([[5, 17, 99, 3, 42, 7], [8, 8, 120, 64, 1, 250], [200, 33, 71, 12, 9, 150]])


def logits(model: Any, ids: torch.Tensor = PROMPTS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def trained(model: Any, seed: int, steps: int = 5) -> tuple[Any, list[float]]:
    """Attach IA³ and take a few AdamW steps on a fixed next-token batch."""
    torch.manual_seed(seed)
    adapter = IA3Method().attach(model, IA3Config())
    opt = torch.optim.AdamW(adapter.trainable_parameters(), lr=0.1)
    ids = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(seed))
    losses = []
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return adapter, losses


def test_found_through_its_entry_point() -> None:
    reset_catalog()
    cat = get_catalog()
    method = cat.method("ia3")
    assert isinstance(method, IA3Method)
    assert cat.owner("methods", "ia3") == "ia3"
    record = cat.pm.record("ia3")
    assert (record.status, record.builtin, record.version, record.distribution) == ("loaded", False, "0.1.0", "adapterhub-ia3")
    reset_catalog()


def test_fresh_adapter_is_identity_and_only_vectors_train(tiny_model: tuple[Any, Any]) -> None:
    model, _ = tiny_model
    before = logits(model)
    adapter = IA3Method().attach(model, IA3Config())
    params = adapter.trainable_parameters()
    # 2 layers x (k_proj out 32 + v_proj out 32 + down_proj in 128)
    assert sum(p.numel() for p in params) == 2 * (32 + 32 + 128)
    assert all(p.requires_grad for p in params)
    assert not any(p.requires_grad for p in model.parameters())
    assert torch.equal(logits(model), before)
    assert sorted(adapter.adapter_state()) == sorted(
        f"model.layers.{i}.{m}.ia3_l" for i in range(2) for m in ("self_attn.k_proj", "self_attn.v_proj", "mlp.down_proj")
    )
    adapter.detach()


def test_training_lowers_loss_and_detach_restores_base(tiny_model: tuple[Any, Any]) -> None:
    model, _ = tiny_model
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    before = logits(model)
    adapter, losses = trained(model, seed=0)
    assert losses[-1] < losses[0] - 0.05, losses
    assert not torch.equal(logits(model), before)
    adapter.detach()
    assert torch.equal(logits(model), before)
    assert all(torch.equal(base_state[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags


def test_double_attach_is_refused(tiny_model: tuple[Any, Any]) -> None:
    model, _ = tiny_model
    adapter = IA3Method().attach(model, IA3Config())
    with pytest.raises(ConfigError, match="already carries IA³ hooks"):
        IA3Method().attach(model, IA3Config())
    adapter.detach()
    IA3Method().attach(model, IA3Config()).detach()


def test_save_and_load_round_trip_through_the_artifact(tiny_model: tuple[Any, Any], tmp_path: Path) -> None:
    model, _ = tiny_model
    adapter, _ = trained(model, seed=1)
    expected = logits(model)
    cfg = IA3Config(target_modules=("k_proj", "v_proj", "down_proj"))
    state = adapter.adapter_state()
    adapter.detach()
    manifest = write_adapter(
        tmp_path / "ia3-adapter",
        {
            "name": "ia3-test", "method": "ia3", "method_kind": "additive",
            "method_config": cfg.model_dump(mode="json"), "base": fingerprint(model, "tiny-random-llama"),
            "trainable_parameters": sum(t.numel() for t in state.values()),
        },
        state,
    )
    assert manifest.method == "ia3"
    read_manifest, tensors = read_adapter(tmp_path / "ia3-adapter")
    fresh, _ = tiny_llama(seed=0)
    config = get_catalog().method(read_manifest.method).config_cls.model_validate(read_manifest.method_config)
    loaded = IA3Method().load(fresh, config, tensors)
    assert torch.allclose(logits(fresh), expected, atol=1e-6)
    loaded.detach()


def test_validate_rejects_what_does_not_fit(tiny_model: tuple[Any, Any]) -> None:
    model, _ = tiny_model
    adapter = IA3Method().attach(model, IA3Config())
    good = adapter.adapter_state()
    adapter.detach()
    method = IA3Method()
    method.validate(model, IA3Config(), good)
    key = "model.layers.1.mlp.down_proj.ia3_l"
    bad_cases: list[tuple[dict[str, torch.Tensor], str]] = [
        ({k: v for k, v in good.items() if k != key}, "missing 1 tensor"),
        ({**good, "model.layers.9.mlp.down_proj.ia3_l": torch.ones(128)}, "1 unexpected tensor"),
        ({**good, key: torch.ones(64)}, "has shape (64,), this model needs (128,)"),
        ({**good, key: torch.ones(128, dtype=torch.int64)}, "floating-point"),
        ({**good, key: torch.full((128,), float("nan"))}, "NaN or Inf"),
    ]
    for tensors, message in bad_cases:
        with pytest.raises(IncompatibleAdapterError, match=message.replace("(", r"\(").replace(")", r"\)")):
            method.validate(model, IA3Config(), tensors)
    with pytest.raises(ConfigError, match="feedforward_modules"):
        method.validate(model, {"target_modules": ["q_proj"]}, good)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no nn.Linear"):
        method.validate(model, IA3Config(target_modules=("nope",), feedforward_modules=()), good)


def _adapter_state(seed: int, config: IA3Config | None = None) -> dict[str, torch.Tensor]:
    model, _ = tiny_llama(seed=0)
    adapter = IA3Method().attach(model, config or IA3Config())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.trainable_parameters():
            p.copy_(1.0 + 0.5 * torch.randn(p.shape, generator=gen))
    state = adapter.adapter_state()
    adapter.detach()
    return state


def test_runtime_mixed_batch_equals_each_row_alone(tiny_model: tuple[Any, Any]) -> None:
    model, _ = tiny_model
    base = logits(model)
    a, b = _adapter_state(1), _adapter_state(2)
    kv_only = IA3Config(target_modules=("k_proj", "v_proj"), feedforward_modules=())
    c = _adapter_state(3, kv_only)
    # Reference: each adapter loaded alone on its own copy of the base.
    singles = {}
    for name, state, cfg in (("a", a, IA3Config()), ("b", b, IA3Config()), ("c", c, kv_only)):
        ref_model, _ = tiny_llama(seed=0)
        ad = IA3Method().load(ref_model, cfg, state)
        singles[name] = logits(ref_model)
        ad.detach()

    rt = IA3Method().runtime(model)
    assert isinstance(rt, IA3Runtime)
    for name, state, cfg in (("a", a, IA3Config()), ("b", b, IA3Config()), ("c", c, kv_only)):
        rt.apply(rt.plan(name, cfg, state))
    assert sorted(rt.resident()) == ["a", "b", "c"]
    assert torch.equal(logits(model), base)  # resident but not routed: base output

    rows = ["a", None, "c"]
    with rt.route(rows, {"input_ids": PROMPTS}) as kwargs:
        mixed = logits(model, kwargs["input_ids"])
    assert torch.allclose(mixed[0], singles["a"][0], atol=1e-5)
    assert torch.allclose(mixed[1], base[1], atol=1e-5)
    assert torch.allclose(mixed[2], singles["c"][2], atol=1e-5)
    with rt.route(["b", "b", "b"], {"input_ids": PROMPTS}):
        assert torch.allclose(logits(model), singles["b"], atol=1e-5)
    assert torch.equal(logits(model), base)

    # A failed plan changes nothing; removal frees the slot; unknown ids are errors.
    broken = {**a, "model.layers.1.mlp.down_proj.ia3_l": torch.ones(3)}
    with pytest.raises(IncompatibleAdapterError):
        rt.plan("d", IA3Config(), broken)
    with rt.route(["a", "b", None], {"input_ids": PROMPTS}):
        again = logits(model)
    assert torch.allclose(again[0], singles["a"][0], atol=1e-5) and torch.allclose(again[1], singles["b"][1], atol=1e-5)
    rt.remove("a")
    with pytest.raises(AdapterUnloadedError):
        rt.build_route(["a"])
    with pytest.raises(ValueError, match="2 rows for a batch of 3"):
        with rt.route(["b", "b"], {"input_ids": PROMPTS}):
            pass
    rt.apply(rt.plan("a2", IA3Config(), a))  # reuses the freed slot
    with rt.route(["a2"] * 3, {"input_ids": PROMPTS}):
        assert torch.allclose(logits(model), singles["a"], atol=1e-5)
    rt.close()
    assert torch.equal(logits(model), base)


def test_runtime_grows_past_initial_capacity(tiny_model: tuple[Any, Any]) -> None:
    model, _ = tiny_model
    rt = IA3Runtime(model)
    states = [_adapter_state(10 + i) for i in range(7)]
    for i, s in enumerate(states):
        rt.apply(rt.plan(f"x{i}", IA3Config(), s))
    ref_model, _ = tiny_llama(seed=0)
    ad = IA3Method().load(ref_model, IA3Config(), states[6])
    expected = logits(ref_model)
    ad.detach()
    with rt.route(["x6"] * 3, {"input_ids": PROMPTS}):
        assert torch.allclose(logits(model), expected, atol=1e-5)
    rt.close()


# adapterhub's method conformance suite: the same checks every built-in method passes
# (protocol, trainable parameters, save/load round trip, bit-exact detach, determinism,
# validation, runtime plan/apply/route/remove, mixed batches).
CASES = [MethodCase(IA3Method(), IA3Config(), lambda: tiny_llama(seed=0)[0], id="ia3")]


@pytest.mark.parametrize(("case", "check"), conformance_params(CASES))
def test_conformance(case: MethodCase, check: str) -> None:
    run_check(case, check)
