"""Training side of prefix tuning: attach, train, fold, save/load, detach."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from adapterhub.plugins.prefix_tuning import PrefixTuningConfig, PrefixTuningMethod
from adapterhub.plugins.prefix_tuning.decode import greedy_decode
from adapterhub.plugins.prefix_tuning.method import SUBMODULE
from safetensors.torch import load_file, save_file

from adapterhub.errors import ConfigError, IncompatibleAdapterError
from adapterhub.protocols.method import Method, TrainableAdapter

CFG = PrefixTuningConfig(num_virtual_tokens=4)


def batch(seed: int = 1, rows: int = 2, length: int = 12) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (rows, length), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def train(model: Any, adapter: Any, steps: int, lr: float = 1e-2) -> list[float]:
    opt = torch.optim.AdamW(adapter.trainable_parameters(), lr=lr)
    data = batch()
    losses = []
    model.train()
    for _ in range(steps):
        loss = model(**data).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def logits(model: Any, data: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    data = data or batch(seed=7)
    with torch.no_grad():
        return model(input_ids=data["input_ids"], attention_mask=data["attention_mask"]).logits


def test_method_protocol_and_metadata(method: PrefixTuningMethod) -> None:
    assert isinstance(method, Method)
    assert method.name == "prefix-tuning"
    assert method.kind == "additive"
    assert method.capabilities.hot_swap and method.capabilities.mixed_batch
    assert not method.capabilities.merge


@pytest.mark.parametrize("projection", [False, True])
def test_attach_only_prefix_params_require_grad(method: PrefixTuningMethod, model: Any, projection: bool) -> None:
    base_names = {n for n, _ in model.named_parameters()}
    adapter = method.attach(model, PrefixTuningConfig(num_virtual_tokens=4, projection=projection, projection_hidden=32))
    assert isinstance(adapter, TrainableAdapter)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and not (trainable & base_names)
    assert all(n.startswith(SUBMODULE + ".") for n in trainable)
    ids = {id(p) for p in adapter.trainable_parameters()}
    assert ids == {id(p) for n, p in model.named_parameters() if p.requires_grad}
    if not projection:  # direct layout: (layers, 2, kv_heads, tokens, head_dim)
        (param,) = adapter.trainable_parameters()
        assert tuple(param.shape) == (2, 2, 2, 4, 16)


@pytest.mark.parametrize("projection", [False, True])
def test_adamw_lowers_the_loss(method: PrefixTuningMethod, model: Any, projection: bool) -> None:
    adapter = method.attach(model, PrefixTuningConfig(num_virtual_tokens=4, projection=projection, projection_hidden=32))
    losses = train(model, adapter, steps=8, lr=0.1)
    # the tiny random base starts near ln(vocab); a drop of 0.1 nats is far beyond noise
    # (the run is deterministic) and needs the gradient to flow through the prefix
    assert losses[-1] < losses[0] - 0.1, losses


def test_gradient_reaches_every_layer_prefix(method: PrefixTuningMethod, model: Any) -> None:
    adapter = method.attach(model, CFG)
    model(**batch()).loss.backward()
    (param,) = adapter.trainable_parameters()
    assert param.grad is not None
    per_layer_kv = param.grad.abs().sum(dim=(2, 3, 4))  # (layers, 2)
    assert bool((per_layer_kv > 0).all()), per_layer_kv


def test_save_load_round_trip_identical_logits(method: PrefixTuningMethod, h: Any, tmp_path: Path) -> None:
    trained = h.make_model()
    adapter = method.attach(trained, CFG)
    train(trained, adapter, steps=3)
    state = adapter.adapter_state()
    assert set(state) == {"prefix.key", "prefix.value"}
    assert all(t.device.type == "cpu" and t.is_contiguous() for t in state.values())
    expected = logits(trained)
    path = tmp_path / "adapter.safetensors"
    save_file(state, str(path))

    fresh = h.make_model()
    loaded = method.load(fresh, CFG, load_file(str(path)))
    assert torch.equal(logits(fresh), expected)
    assert all(torch.equal(a, b) for a, b in zip(loaded.adapter_state().values(), state.values(), strict=True))
    # the prefix really changes the model (else the round trip would prove nothing)
    loaded.detach()
    assert (logits(fresh) - expected).abs().max() > 1e-3


def test_adapter_state_is_a_snapshot(method: PrefixTuningMethod, model: Any) -> None:
    adapter = method.attach(model, CFG)
    before = adapter.adapter_state()
    train(model, adapter, steps=1)
    after = adapter.adapter_state()
    assert not torch.equal(before["prefix.key"], after["prefix.key"])


@pytest.mark.parametrize("projection", [False, True])
def test_detach_gives_base_back_bit_exact(method: PrefixTuningMethod, model: Any, projection: bool) -> None:
    reference = copy.deepcopy(model)
    before = logits(model)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    adapter = method.attach(model, PrefixTuningConfig(num_virtual_tokens=3, projection=projection, projection_hidden=16))
    train(model, adapter, steps=2)
    assert not torch.equal(logits(model), before)
    adapter.detach()
    adapter.detach()  # idempotent
    sd, ref = model.state_dict(), reference.state_dict()
    assert list(sd) == list(ref)
    assert all(torch.equal(sd[k], ref[k]) for k in sd)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert not hasattr(model, SUBMODULE) and not model._forward_pre_hooks
    assert torch.equal(logits(model), before)


@pytest.mark.parametrize("projection", [False, True])
def test_deterministic_under_seed(method: PrefixTuningMethod, h: Any, projection: bool) -> None:
    cfg = PrefixTuningConfig(num_virtual_tokens=4, projection=projection, projection_hidden=16)
    runs = []
    for _ in range(2):
        m = h.make_model()
        torch.manual_seed(123)
        adapter = method.attach(m, cfg)
        losses = train(m, adapter, steps=3)
        runs.append((adapter.adapter_state(), losses))
    (s1, l1), (s2, l2) = runs
    assert l1 == l2
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    torch.manual_seed(124)
    other = method.attach(h.make_model(), cfg).adapter_state()
    assert not torch.equal(other["prefix.key"], s1["prefix.key"])  # the seed matters


def test_projection_is_folded_away(method: PrefixTuningMethod, h: Any, tmp_path: Path) -> None:
    cfg = PrefixTuningConfig(num_virtual_tokens=5, projection=True, projection_hidden=24)
    m = h.make_model()
    adapter = method.attach(m, cfg)
    assert any(n.startswith(f"{SUBMODULE}.mlp.") for n, _ in m.named_parameters())
    train(m, adapter, steps=3)
    with_mlp = logits(m)
    state = adapter.adapter_state()
    assert set(state) == {"prefix.key", "prefix.value"}
    assert tuple(state["prefix.key"].shape) == (2, 2, 5, 16)
    save_file(state, str(tmp_path / "a.safetensors"))

    fresh = h.make_model()
    reloaded = method.load(fresh, cfg, load_file(str(tmp_path / "a.safetensors")))
    assert [n for n, _ in fresh.named_parameters() if n.startswith(SUBMODULE)] == [f"{SUBMODULE}.prefix"]
    assert len(reloaded.trainable_parameters()) == 1
    assert (logits(fresh) - with_mlp).abs().max() <= 1e-5


@pytest.mark.parametrize("init", ["vocab", "normal", "zero"])
def test_init_options(method: PrefixTuningMethod, model: Any, init: str) -> None:
    state = method.attach(model, PrefixTuningConfig(num_virtual_tokens=3, init=init, init_std=0.5)).adapter_state()
    key = state["prefix.key"]
    if init == "zero":
        assert not key.any()
    elif init == "normal":
        assert 0.3 < float(key.std()) < 0.7
    else:  # the base's own keys for random tokens: finite, non-trivial, not N(0, 1)
        assert torch.isfinite(key).all() and float(key.abs().max()) > 0


def test_zero_init_with_projection_starts_at_zero(method: PrefixTuningMethod, model: Any) -> None:
    state = method.attach(model, PrefixTuningConfig(num_virtual_tokens=3, init="zero", projection=True)).adapter_state()
    assert not state["prefix.key"].any() and not state["prefix.value"].any()


def test_gqa_smollm_shape(method: PrefixTuningMethod, h: Any) -> None:
    m = h.smollm_shaped()
    adapter = method.attach(m, CFG)
    state = adapter.adapter_state()
    assert tuple(state["prefix.key"].shape) == (3, 3, 4, 8)  # (layers, kv heads=3, tokens, head_dim)
    losses = train(m, adapter, steps=5)
    assert losses[-1] < losses[0]


def test_left_padding_respected_by_the_hook(method: PrefixTuningMethod, model: Any, h: Any) -> None:
    method.attach(model, PrefixTuningConfig(num_virtual_tokens=3, init="normal", init_std=1.0))
    gen = torch.Generator().manual_seed(3)
    seqs = [torch.randint(0, 256, (n,), generator=gen) for n in (6, 3, 9)]
    ids, mask = h.left_pad(seqs)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
        for i, s in enumerate(seqs):
            alone = model(input_ids=s[None]).logits[0]
            assert (full[i, -len(s):] - alone).abs().max() <= 1e-5


def test_generate_on_attached_model_matches_full_recompute(method: PrefixTuningMethod, model: Any, h: Any) -> None:
    method.attach(model, PrefixTuningConfig(num_virtual_tokens=4, init="normal", init_std=1.0))
    gen = torch.Generator().manual_seed(5)
    seqs = [torch.randint(0, 256, (n,), generator=gen) for n in (5, 8)]
    ids, mask = h.left_pad(seqs)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                             eos_token_id=None, pad_token_id=258)[:, ids.shape[1]:]
        ours = greedy_decode(model, {"input_ids": ids, "attention_mask": mask}, 6)
        for i, s in enumerate(seqs):  # ground truth: no cache reuse, prefix re-injected every step
            seq = s[None]
            for _ in range(6):
                nxt = model(input_ids=seq).logits[:, -1].argmax(-1, keepdim=True)
                seq = torch.cat([seq, nxt], dim=1)
            assert out[i].tolist() == seq[0, len(s):].tolist() == ours.tokens[i]


def test_attach_twice_is_refused(method: PrefixTuningMethod, model: Any) -> None:
    method.attach(model, CFG)
    with pytest.raises(ConfigError, match="already attached"):
        method.attach(model, CFG)


def test_gradient_checkpointing_is_refused(method: PrefixTuningMethod, model: Any) -> None:
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    with pytest.raises(ConfigError, match="gradient checkpointing"):
        method.attach(model, CFG)
    assert not hasattr(model, SUBMODULE)
    assert all(p.requires_grad for p in model.parameters())


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="extra"):
        PrefixTuningConfig(num_virtual_tokens=4, rank=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        PrefixTuningConfig(num_virtual_tokens=0)
    cfg = PrefixTuningConfig()
    assert cfg.num_virtual_tokens == 20 and not cfg.projection


def test_mapping_config_and_bad_config(method: PrefixTuningMethod, model: Any) -> None:
    adapter = method.attach(model, {"num_virtual_tokens": 2})  # type: ignore[arg-type]
    assert adapter.adapter_state()["prefix.key"].shape[2] == 2
    adapter.detach()
    with pytest.raises(ConfigError, match="num_virtual_tokens"):
        method.attach(model, {"num_virtual_tokens": -1})  # type: ignore[arg-type]
    with pytest.raises(IncompatibleAdapterError, match="PrefixTuningConfig"):
        method.attach(model, object())  # type: ignore[arg-type]
