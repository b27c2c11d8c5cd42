"""Serving runtime: resident prefixes, plan/apply/remove, and mixed-batch routing."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from adapterhub.plugins.prefix_tuning import PrefixTuningConfig, PrefixTuningMethod
from adapterhub.plugins.prefix_tuning.decode import greedy_decode
from adapterhub.plugins.prefix_tuning.runtime import PrefixRuntime
from transformers import DynamicCache

from adapterhub.errors import AdapterUnloadedError, ConfigError, IncompatibleAdapterError
from adapterhub.protocols.method import MethodRuntime

TOKENS = {"a": 3, "b": 6}
ROWS: list[str | None] = ["a", "b", None, "a"]
LENGTHS = [5, 9, 4, 7]  # different left padding per row
NEW = 6


def setup_runtime(method: PrefixTuningMethod, model: Any, h: Any) -> tuple[PrefixRuntime, dict[str, dict[str, torch.Tensor]]]:
    runtime = method.runtime(model)
    adapters = {name: h.random_prefix(model, n, seed=i) for i, (name, n) in enumerate(TOKENS.items())}
    for name, tensors in adapters.items():
        runtime.apply(runtime.plan(name, PrefixTuningConfig(num_virtual_tokens=TOKENS[name]), tensors))
    return runtime, adapters


def prompts() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(42)
    return [torch.randint(0, 256, (n,), generator=gen) for n in LENGTHS]


def run_mixed(runtime: PrefixRuntime, model: Any, h: Any, rows: list[str | None] = ROWS) -> Any:
    ids, mask = h.left_pad(prompts())
    with runtime.route(rows, {"input_ids": ids, "attention_mask": mask}) as kwargs:
        return greedy_decode(model, kwargs, NEW)


def test_runtime_protocol(method: PrefixTuningMethod, model: Any) -> None:
    assert isinstance(method.runtime(model), MethodRuntime)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_mixed_batch_equals_each_row_alone(method: PrefixTuningMethod, h: Any, attn: str) -> None:
    model = h.make_model(attn_implementation=attn)
    runtime, _ = setup_runtime(method, model, h)
    mixed = run_mixed(runtime, model, h)
    width = max(LENGTHS)
    assert torch.isfinite(mixed.prefill_logits).all()
    for i, (row, seq) in enumerate(zip(ROWS, prompts(), strict=True)):
        with runtime.route([row], {"input_ids": seq[None], "attention_mask": torch.ones(1, len(seq), dtype=torch.long)}) as kw:
            alone = greedy_decode(model, kw, NEW)
        diff = (mixed.prefill_logits[i, width - len(seq):] - alone.prefill_logits[0]).abs().max()
        assert diff <= 1e-5, (i, row, float(diff))
        assert mixed.tokens[i] == alone.tokens[0], (i, row)


def test_mixed_batch_equals_training_side_attached_path(method: PrefixTuningMethod, h: Any) -> None:
    model = h.make_model()
    runtime, adapters = setup_runtime(method, model, h)
    mixed = run_mixed(runtime, model, h)
    width = max(LENGTHS)
    for i, (row, seq) in enumerate(zip(ROWS, prompts(), strict=True)):
        attached = copy.deepcopy(model)
        if row is not None:
            method.load(attached, PrefixTuningConfig(num_virtual_tokens=TOKENS[row]), adapters[row])
        with torch.no_grad():
            ref_logits = attached(input_ids=seq[None]).logits[0]
        ref = greedy_decode(attached, {"input_ids": seq[None]}, NEW)
        assert (mixed.prefill_logits[i, width - len(seq):] - ref_logits).abs().max() <= 1e-5
        assert mixed.tokens[i] == ref.tokens[0]
    # and the prefixes do change the rows (the equality is not trivially base == base)
    base = run_mixed(runtime, model, h, rows=[None] * 4)
    assert (base.prefill_logits[0] - mixed.prefill_logits[0]).abs().max() > 1e-3


def test_route_kwargs_layout(method: PrefixTuningMethod, model: Any, h: Any) -> None:
    runtime, adapters = setup_runtime(method, model, h)
    ids, mask = h.left_pad(prompts())
    with runtime.route(ROWS, {"input_ids": ids, "attention_mask": mask}) as kw:
        cache = kw["cache"]
        assert isinstance(cache, DynamicCache) and cache.get_seq_length() == 6
        # slot mask: a -> 3 ones, b -> 6, None -> 0; then the given mask unchanged
        assert kw["attention_mask"][:, :6].sum(1).tolist() == [3, 6, 0, 3]
        assert torch.equal(kw["attention_mask"][:, 6:], mask)
        # real tokens start at the row's prefix length; pads sit at the prefix length too
        pos = kw["position_ids"]
        for i, (row, n) in enumerate(zip(ROWS, LENGTHS, strict=True)):
            offset = TOKENS[row] if row else 0
            assert pos[i, -n:].tolist() == list(range(offset, offset + n))
        layer0: Any = cache.layers[0]
        assert torch.equal(layer0.keys[1, :, :6], adapters["b"]["prefix.key"][0])
        assert torch.equal(layer0.keys[0, :, :3], adapters["a"]["prefix.key"][0])
        assert not layer0.keys[2].any()  # the no-prefix row's slots are zeros (and masked)


def test_failed_plan_leaves_outputs_bit_identical(method: PrefixTuningMethod, model: Any, h: Any) -> None:
    runtime, adapters = setup_runtime(method, model, h)
    before = run_mixed(runtime, model, h)
    bad_shape = dict(adapters["a"])
    bad_shape["prefix.value"] = bad_shape["prefix.value"][..., :-1]  # the last tensor is wrong-shaped
    with pytest.raises(IncompatibleAdapterError, match="head_dim is 15"):
        runtime.plan("a", PrefixTuningConfig(num_virtual_tokens=3), bad_shape)
    nan = {k: v.clone() for k, v in adapters["b"].items()}
    nan["prefix.value"][-1, -1, -1, -1] = float("nan")
    with pytest.raises(IncompatibleAdapterError, match="NaN"):
        runtime.plan("b", PrefixTuningConfig(num_virtual_tokens=6), nan)
    with pytest.raises(IncompatibleAdapterError, match="num_virtual_tokens is 3, the model/config needs 4"):
        runtime.plan("a", PrefixTuningConfig(num_virtual_tokens=4), adapters["a"])
    assert sorted(runtime.resident()) == ["a", "b"]
    after = run_mixed(runtime, model, h)
    assert torch.equal(before.prefill_logits, after.prefill_logits)
    assert before.tokens == after.tokens


def test_replace_remove_and_unknown(method: PrefixTuningMethod, model: Any, h: Any) -> None:
    runtime, _ = setup_runtime(method, model, h)
    before = run_mixed(runtime, model, h)
    runtime.apply(runtime.plan("a", PrefixTuningConfig(num_virtual_tokens=2), h.random_prefix(model, 2, seed=9)))
    replaced = run_mixed(runtime, model, h)
    assert (replaced.prefill_logits[0] - before.prefill_logits[0]).abs().max() > 1e-3
    assert torch.equal(replaced.prefill_logits[2], before.prefill_logits[2])  # the base row is untouched
    runtime.remove("a")
    assert runtime.resident() == ["b"]
    with pytest.raises(AdapterUnloadedError, match="'a'"):
        run_mixed(runtime, model, h)
    with pytest.raises(AdapterUnloadedError):
        runtime.remove("a")


def test_plan_changes_nothing_and_copies(method: PrefixTuningMethod, model: Any, h: Any) -> None:
    runtime = method.runtime(model)
    tensors = h.random_prefix(model, 3, seed=0)
    plan = runtime.plan("x", PrefixTuningConfig(num_virtual_tokens=3), tensors)
    assert runtime.resident() == []
    assert plan.method == "prefix-tuning" and plan.nbytes == 2 * 2 * 2 * 3 * 16 * 4
    runtime.apply(plan)
    snapshot = runtime.get("x").key.clone()
    tensors["prefix.key"].add_(1.0)  # the caller's tensors are not aliased
    assert torch.equal(runtime.get("x").key, snapshot)


def test_plan_converts_to_base_dtype(method: PrefixTuningMethod, h: Any) -> None:
    model = h.make_model(dtype=torch.bfloat16)
    runtime = method.runtime(model)
    plan = runtime.plan("x", PrefixTuningConfig(num_virtual_tokens=3), h.random_prefix(model, 3, seed=0))
    assert all(t.dtype == torch.bfloat16 for t in plan.tensors.values())
    assert plan.nbytes == 2 * 2 * 2 * 3 * 16 * 2
    half = method.runtime(h.make_model(dtype=torch.float16))
    big = {k: v * 1e6 for k, v in h.random_prefix(model, 3, seed=0).items()}
    with pytest.raises(IncompatibleAdapterError, match="overflows"):
        half.plan("x", PrefixTuningConfig(num_virtual_tokens=3), big)


def test_route_without_prefix_rows_is_a_no_op(method: PrefixTuningMethod, model: Any, h: Any) -> None:
    runtime, _ = setup_runtime(method, model, h)
    ids, mask = h.left_pad(prompts())
    inputs = {"input_ids": ids, "attention_mask": mask}
    with runtime.route([None] * 4, inputs) as kw:
        assert kw == inputs and kw["attention_mask"] is mask


def test_route_input_errors(method: PrefixTuningMethod, model: Any, h: Any) -> None:
    runtime, _ = setup_runtime(method, model, h)
    ids, mask = h.left_pad(prompts())
    with pytest.raises(ConfigError, match="3 row adapters for a batch of 4"), runtime.route(["a", "b", None], {"input_ids": ids}):
        pass
    full = DynamicCache()
    full.update(torch.zeros(4, 2, 1, 16), torch.zeros(4, 2, 1, 16), 0)
    # A forward that continues rows (the cache already holds their prefixes) passes
    # through unchanged: the serving engine enters the route on every decode step.
    given = {"input_ids": ids, "attention_mask": mask, "cache": full}
    with runtime.route(ROWS, dict(given)) as kwargs:
        assert kwargs["cache"] is full and kwargs["attention_mask"] is mask and "position_ids" not in kwargs
    with pytest.raises(ConfigError, match="input_ids"), runtime.route(ROWS, {"attention_mask": mask}):
        pass


def test_runtime_refuses_foreign_config(method: PrefixTuningMethod, model: Any, h: Any) -> None:
    runtime = method.runtime(model)

    class Other(PrefixTuningConfig.__base__):  # type: ignore[name-defined,misc]
        pass

    with pytest.raises(IncompatibleAdapterError, match="PrefixTuningConfig"):
        runtime.plan("x", Other(), h.random_prefix(model, 3, seed=0))


def test_initial_kv_is_the_resident_prefix_and_seeds_a_request_like_route(method: PrefixTuningMethod, model: Any, h: Any) -> None:
    from adapterhub.plugins.prefix_tuning.layout import cache_kwarg, prefilled_cache

    from adapterhub.protocols.method import PackedRuntime

    runtime, adapters = setup_runtime(method, model, h)
    assert isinstance(runtime, PackedRuntime)
    key, value = runtime.initial_kv("b")
    assert key is runtime.get("b").key and value is runtime.get("b").value  # read, never copied
    assert torch.equal(key, adapters["b"]["prefix.key"]) and torch.equal(value, adapters["b"]["prefix.value"])
    assert key.shape == (model.config.num_hidden_layers, model.config.num_key_value_heads, TOKENS["b"], model.config.head_dim)
    # What the engine does with it: the cache starts with the virtual tokens and the
    # request's own tokens take positions T, T + 1, ...; that equals route([id]).
    seq = prompts()[1][None]
    n = TOKENS["b"]
    cache = prefilled_cache(model, [k[None] for k in key], [v[None] for v in value])
    with torch.no_grad():
        seeded = model(input_ids=seq, position_ids=torch.arange(n, n + seq.shape[1])[None], **{cache_kwarg(model): cache}).logits
        with runtime.route(["b"], {"input_ids": seq, "attention_mask": torch.ones_like(seq)}) as kw:
            routed = model(**kw).logits
    assert (seeded - routed).abs().max() <= 1e-5
    with pytest.raises(AdapterUnloadedError, match="'nope'"):
        runtime.initial_kv("nope")


def test_route_tokens_passes_the_inputs_through_and_refuses_non_resident(method: PrefixTuningMethod, model: Any, h: Any) -> None:
    from adapterhub.protocols.method import TokenSpan

    runtime, _ = setup_runtime(method, model, h)
    ids = torch.randint(0, 256, (1, 9), generator=torch.Generator().manual_seed(3))
    inputs = {"input_ids": ids, "position_ids": torch.tensor([[3, 4, 5, 0, 1, 6, 7, 8, 9]])}
    spans = [TokenSpan("a", 0, 3), TokenSpan(None, 3, 5), TokenSpan("b", 5, 9)]
    with runtime.route_tokens(spans, inputs) as kwargs:
        assert kwargs is inputs and set(kwargs) == {"input_ids", "position_ids"}  # no cache, mask unchanged
    runtime.remove("a")
    with pytest.raises(AdapterUnloadedError, match="'a'"):
        with runtime.route_tokens(spans, inputs):
            pass
