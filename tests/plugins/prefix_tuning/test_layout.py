"""Validation of stored prefixes, model geometry, and the PEFT flat-layout mapping."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from adapterhub.plugins.prefix_tuning import PrefixTuningConfig, PrefixTuningMethod
from adapterhub.plugins.prefix_tuning.layout import (
    from_peft_prompt_embeddings,
    geometry_of,
    to_peft_prompt_embeddings,
)
from transformers import LlamaConfig, LlamaForCausalLM

from adapterhub.errors import IncompatibleAdapterError

CFG = PrefixTuningConfig(num_virtual_tokens=3)


def good(h: Any, model: Any) -> dict[str, torch.Tensor]:
    return h.random_prefix(model, 3, seed=0)


def test_valid_prefix_passes(method: PrefixTuningMethod, model: Any, h: Any) -> None:
    method.validate(model, CFG, good(h, model))
    half = {k: v.half() for k, v in good(h, model).items()}
    method.validate(model, CFG, half)


def test_geometry_reads_gqa() -> None:
    g = geometry_of(LlamaForCausalLM(LlamaConfig(hidden_size=576, intermediate_size=64, num_hidden_layers=1,
                                                 num_attention_heads=9, num_key_value_heads=3, vocab_size=10)))
    assert (g.num_layers, g.num_kv_heads, g.head_dim) == (1, 3, 64)  # SmolLM2-135M's heads
    assert g.flat_dim == 1 * 2 * 3 * 64


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.pop("prefix.value"), r"missing tensor\(s\) \['prefix.value'\]"),
        (lambda t: t.update({"lora_A": torch.zeros(1)}), r"unexpected tensor\(s\) \['lora_A'\]"),
        (lambda t: t.update({"prefix.key": t["prefix.key"][:1]}), "num_layers is 1, the model/config needs 2"),
        (lambda t: t.update({"prefix.key": t["prefix.key"].repeat(1, 2, 1, 1)}), "num_key_value_heads is 4, the model/config needs 2"),
        (lambda t: t.update({"prefix.value": t["prefix.value"][:, :, :2]}), "prefix.value .*num_virtual_tokens is 2, the model/config needs 3"),
        (lambda t: t.update({"prefix.key": t["prefix.key"][..., :8]}), "head_dim is 8, the model/config needs 16"),
        (lambda t: t.update({"prefix.key": t["prefix.key"][0]}), r"shape \[2, 3, 16\], expected \[2, 2, 3, 16\]"),
        (lambda t: t.update({"prefix.key": t["prefix.key"].long()}), "dtype torch.int64, expected a floating dtype"),
        (lambda t: t["prefix.value"].view(-1).__setitem__(5, float("nan")), "prefix.value contains NaN or infinite"),
        (lambda t: t["prefix.key"].view(-1).__setitem__(0, float("inf")), "prefix.key contains NaN or infinite"),
        (lambda t: t.update({"prefix.value": t["prefix.value"].half()}), "different dtypes"),
    ],
)
def test_validate_errors_name_the_problem(method: PrefixTuningMethod, model: Any, h: Any, mutate: Any, message: str) -> None:
    tensors = good(h, model)
    mutate(tensors)
    with pytest.raises(IncompatibleAdapterError, match=message) as info:
        method.validate(model, CFG, tensors)
    assert "\n" not in str(info.value)
    with pytest.raises(IncompatibleAdapterError):
        method.load(model, CFG, tensors)
    assert not model._forward_pre_hooks  # a refused load attached nothing


def test_validate_against_other_geometry(method: PrefixTuningMethod, h: Any) -> None:
    tensors = h.random_prefix(h.make_model(), 3, seed=0)
    with pytest.raises(IncompatibleAdapterError, match="num_layers is 2, the model/config needs 3"):
        method.validate(h.smollm_shaped(), CFG, tensors)


def test_unsupported_models_are_refused(method: PrefixTuningMethod) -> None:
    with pytest.raises(IncompatibleAdapterError, match="with a config"):
        method.attach(torch.nn.Linear(2, 2), CFG)
    sliding = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=32, num_hidden_layers=2,
                                           num_attention_heads=2, vocab_size=10))
    sliding.config.layer_types = ["full_attention", "sliding_attention"]
    with pytest.raises(IncompatibleAdapterError, match="sliding_attention"):
        method.attach(sliding, CFG)


def test_peft_mapping_round_trip_and_layout(model: Any, h: Any) -> None:
    tensors = good(h, model)
    flat = to_peft_prompt_embeddings(tensors["prefix.key"], tensors["prefix.value"])
    assert tuple(flat.shape) == (3, 2 * 2 * 2 * 16)
    # documented element mapping: flat.view(T, L, 2, Hkv, D)[t, l, 0/1, h] = key/value[l, h, t]
    view = flat.view(3, 2, 2, 2, 16)
    assert torch.equal(view[1, 1, 0, 0], tensors["prefix.key"][1, 0, 1])
    assert torch.equal(view[2, 0, 1, 1], tensors["prefix.value"][0, 1, 2])
    back = from_peft_prompt_embeddings(flat, geometry_of(model))
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)
    with pytest.raises(IncompatibleAdapterError, match="expected \\[num_virtual_tokens, 128\\]"):
        from_peft_prompt_embeddings(flat[:, :-1], geometry_of(model))
