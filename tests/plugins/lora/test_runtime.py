"""Serving-side LoRA runtime: residency, per-row routing, exactness, failed plans, growth."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest
import torch
from adapterhub.plugins.lora import LoraConfig, LoraMethod, LoraRuntime
from adapterhub.plugins.lora.layers import MultiLoraLinear

from adapterhub.errors import AdapterUnloadedError, IncompatibleAdapterError
from adapterhub.protocols.method import MethodRuntime
from adapterhub.testing.models import tiny_llama

METHOD = LoraMethod()
IDS = torch.randint(0, 256, (5, 10), generator=torch.Generator().manual_seed(11))
TOL = 1e-5

CONFIGS = {
    "qv4": LoraConfig(r=4, alpha=8),
    "all8": LoraConfig(r=8, alpha=4, target_modules="all-linear"),
    "mlp2": LoraConfig(r=2, alpha=6, target_modules=("gate_proj", "down_proj")),
}


def make_tensors(cfg: LoraConfig, seed: int) -> dict[str, torch.Tensor]:
    """Random (non-trivial) adapter tensors for ``cfg`` via the training side."""
    model, _ = tiny_llama()
    adapter = METHOD.attach(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return adapter.adapter_state()


@pytest.fixture(scope="module")
def adapters() -> dict[str, tuple[LoraConfig, dict[str, torch.Tensor]]]:
    return {name: (cfg, make_tensors(cfg, seed)) for seed, (name, cfg) in enumerate(CONFIGS.items())}


@pytest.fixture(scope="module")
def attached_logits(adapters: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Reference: each adapter through the training-side ``load`` on a fresh base."""
    out = {}
    for name, (cfg, tensors) in adapters.items():
        model, _ = tiny_llama()
        METHOD.load(model, cfg, tensors)
        out[name] = logits(model, IDS)
    return out


def logits(model: Any, ids: torch.Tensor, runtime: LoraRuntime | None = None, rows: list[str | None] | None = None) -> torch.Tensor:
    with torch.no_grad():
        if runtime is None or rows is None:
            return model(input_ids=ids).logits
        with runtime.route(rows, {"input_ids": ids}) as kwargs:
            return model(**kwargs).logits


def loaded_runtime(adapters: dict[str, Any], names: list[str] | None = None) -> tuple[Any, LoraRuntime]:
    model, _ = tiny_llama()
    rt = METHOD.runtime(model)
    for name in names or list(adapters):
        cfg, tensors = adapters[name]
        rt.apply(rt.plan(name, cfg, tensors))
    return model, rt


def test_is_a_method_runtime(adapters: dict[str, Any]) -> None:
    _, rt = loaded_runtime(adapters)
    assert isinstance(rt, MethodRuntime)
    assert list(rt.resident()) == list(CONFIGS)


def test_mixed_batch_equals_each_row_alone_and_the_attached_adapter(adapters: dict[str, Any], attached_logits: dict[str, torch.Tensor]) -> None:
    model, rt = loaded_runtime(adapters)
    rows: list[str | None] = ["qv4", "all8", None, "mlp2", "qv4"]
    mixed = logits(model, IDS, rt, rows)
    base, _ = tiny_llama()
    base_logits = logits(base, IDS)
    for i, name in enumerate(rows):
        alone = logits(model, IDS[i : i + 1], rt, [name])
        assert (mixed[i] - alone[0]).abs().max().item() <= TOL, (i, name)
        ref = base_logits[i] if name is None else attached_logits[name][i]
        assert (mixed[i] - ref).abs().max().item() <= TOL, (i, name)
        if name is not None:
            assert (alone[0] - base_logits[i]).abs().max().item() > 1e-3  # adapters matter
    # Single-adapter fast path (whole batch on one adapter) equals the attached path.
    for name in CONFIGS:
        assert (logits(model, IDS, rt, [name] * 5) - attached_logits[name]).abs().max().item() <= TOL


def test_no_adapter_rows_and_outside_a_route_are_the_bare_base(adapters: dict[str, Any]) -> None:
    model, rt = loaded_runtime(adapters)
    base, _ = tiny_llama()
    expect = logits(base, IDS)
    assert torch.equal(logits(model, IDS), expect)
    assert torch.equal(logits(model, IDS, rt, [None] * 5), expect)
    logits(model, IDS, rt, ["all8"] * 5)
    assert torch.equal(logits(model, IDS), expect)  # the route ended with the context


def test_failed_plan_leaves_outputs_bit_identical(adapters: dict[str, Any]) -> None:
    model, rt = loaded_runtime(adapters, ["qv4", "all8"])
    rows: list[str | None] = ["qv4", "all8", None, "all8", "qv4"]
    before = logits(model, IDS, rt, rows)
    modules = dict(model.named_modules())
    cfg, tensors = adapters["all8"]
    bad = dict(tensors)
    last = "model.layers.1.mlp.down_proj.lora_B"
    assert list(bad)[-1] == last  # the very last tensor is the broken one
    bad[last] = torch.zeros(64, 9)
    with pytest.raises(IncompatibleAdapterError, match=last):
        rt.plan("broken", cfg, bad)
    nan = {**tensors, last: torch.full((64, 8), float("nan"))}
    with pytest.raises(IncompatibleAdapterError, match="NaN"):
        rt.plan("broken", cfg, nan)
    assert list(rt.resident()) == ["qv4", "all8"]
    assert dict(model.named_modules()) == modules
    assert torch.equal(logits(model, IDS, rt, rows), before)


def test_plan_changes_nothing_until_apply(adapters: dict[str, Any]) -> None:
    model, _ = tiny_llama()
    rt = METHOD.runtime(model)
    modules = dict(model.named_modules())
    cfg, tensors = adapters["all8"]
    plan = rt.plan("all8", cfg, tensors)
    assert plan.nbytes == sum(t.numel() * 4 for t in tensors.values())
    assert rt.resident() == [] and rt.wrapped == []
    assert dict(model.named_modules()) == modules
    rt.apply(plan)
    with pytest.raises(IncompatibleAdapterError, match="already resident"):
        rt.plan("all8", cfg, tensors)


def test_remove_and_reapply(adapters: dict[str, Any], attached_logits: dict[str, torch.Tensor]) -> None:
    model, rt = loaded_runtime(adapters)
    slot = rt.slot_of("all8")
    rt.remove("all8")
    assert "all8" not in rt.resident()
    with pytest.raises(AdapterUnloadedError, match="all8"):
        logits(model, IDS, rt, ["all8"] * 5)
    with pytest.raises(AdapterUnloadedError):
        rt.remove("all8")
    # The others are untouched by the removal.
    assert (logits(model, IDS, rt, ["mlp2"] * 5) - attached_logits["mlp2"]).abs().max().item() <= TOL
    cfg, tensors = adapters["all8"]
    rt.apply(rt.plan("all8-v2", cfg, tensors))
    assert rt.slot_of("all8-v2") == slot  # freed slot reused
    rows: list[str | None] = ["all8-v2", "qv4", "all8-v2", None, "mlp2"]
    mixed = logits(model, IDS, rt, rows)
    assert (mixed[0] - attached_logits["all8"][0]).abs().max().item() <= TOL
    assert (mixed[4] - attached_logits["mlp2"][4]).abs().max().item() <= TOL


def test_capacity_grows_by_doubling_and_stays_exact() -> None:
    model, _ = tiny_llama()
    rt = METHOD.runtime(model)
    cfg = LoraConfig(r=2, alpha=4, target_modules=("q_proj",))
    tensors = [make_tensors(cfg, 100 + i) for i in range(11)]
    rt.apply(rt.plan("a0", cfg, tensors[0]))
    first = logits(model, IDS, rt, ["a0"] * 5)
    capacities = []
    for i in range(1, 11):
        rt.apply(rt.plan(f"a{i}", cfg, tensors[i]))
        capacities.append(rt.capacity)
    assert capacities[0] == 4 and capacities[-1] >= 11 and sorted(set(capacities)) == [4, 9, 19]
    assert torch.equal(logits(model, IDS, rt, ["a0"] * 5), first)
    rows = ["a0", "a3", "a7", "a10", "a9"]
    mixed = logits(model, IDS, rt, rows)  # type: ignore[arg-type]
    for i, name in enumerate(rows):
        alone = logits(model, IDS[i : i + 1], rt, [name])
        assert (mixed[i] - alone[0]).abs().max().item() <= TOL


def test_growing_targets_and_rank_later_is_exact(adapters: dict[str, Any], attached_logits: dict[str, torch.Tensor]) -> None:
    model, rt = loaded_runtime(adapters, ["mlp2"])
    assert len(rt.wrapped) == 4
    first = logits(model, IDS, rt, ["mlp2"] * 5)
    rt.apply(rt.plan("qv4", *adapters["qv4"]))
    rt.apply(rt.plan("all8", *adapters["all8"]))  # wraps 14 linears, r_max 2 -> 8
    assert len(rt.wrapped) == 14
    assert (logits(model, IDS, rt, ["mlp2"] * 5) - first).abs().max().item() <= 1e-6
    for name in CONFIGS:
        assert (logits(model, IDS, rt, [name] * 5) - attached_logits[name]).abs().max().item() <= TOL


def test_route_is_per_thread(adapters: dict[str, Any]) -> None:
    model, rt = loaded_runtime(adapters)
    base, _ = tiny_llama()
    expect = logits(base, IDS)
    inside, release = threading.Event(), threading.Event()
    seen: dict[str, torch.Tensor] = {}

    def worker() -> None:
        with rt.route(["all8"] * 5, {"input_ids": IDS}), torch.no_grad():
            inside.set()
            release.wait(10)
            seen["out"] = model(input_ids=IDS).logits

    t = threading.Thread(target=worker)
    t.start()
    assert inside.wait(10)
    assert torch.equal(logits(model, IDS), expect)  # this thread has no route
    release.set()
    t.join(10)
    assert (seen["out"] - expect).abs().max().item() > 1e-3


def test_route_errors(adapters: dict[str, Any]) -> None:
    model, rt = loaded_runtime(adapters)
    with pytest.raises(AdapterUnloadedError, match="nope"):
        with rt.route(["qv4", "nope"], {}):
            pass
    with pytest.raises(ValueError, match="2 rows for a batch of 5"):
        with rt.route(["qv4", "all8"], {"input_ids": IDS}):
            pass


def test_rows_repeated_for_beams_follow_their_request(adapters: dict[str, Any]) -> None:
    model, rt = loaded_runtime(adapters)
    ids = IDS[:2]
    with rt.route(["qv4", "all8"], {"input_ids": ids}), torch.no_grad():
        out = model(input_ids=ids.repeat_interleave(2, dim=0)).logits
    for i, name in enumerate(["qv4", "qv4", "all8", "all8"]):
        alone = logits(model, IDS[i // 2 : i // 2 + 1], rt, [name])
        assert (out[i] - alone[0]).abs().max().item() <= TOL


def test_close_restores_the_base(adapters: dict[str, Any]) -> None:
    model, _ = tiny_llama()
    modules = dict(model.named_modules())
    params = {n: (p, p.detach().clone()) for n, p in model.named_parameters()}
    keys = set(model.state_dict())
    expect = logits(model, IDS)
    rt = METHOD.runtime(model)
    for name, (cfg, tensors) in adapters.items():
        rt.apply(rt.plan(name, cfg, tensors))
    assert any(isinstance(m, MultiLoraLinear) for m in model.modules())
    assert set(model.state_dict()) == keys  # wrapping adds or renames no state_dict key
    rt.close()
    assert dict(model.named_modules()) == modules
    assert all(dict(model.named_parameters())[n] is p and torch.equal(p, v) for n, (p, v) in params.items())
    assert torch.equal(logits(model, IDS), expect)


def test_bf16_base_serves_within_bf16_tolerance(adapters: dict[str, Any]) -> None:
    model, _ = tiny_llama(dtype=torch.bfloat16)
    rt = METHOD.runtime(model)
    cfg, tensors = adapters["all8"]
    plan = rt.plan("all8", cfg, tensors)
    assert all(t.dtype == torch.bfloat16 for t in plan.tensors.values())
    rt.apply(plan)
    rows: list[str | None] = ["all8", None, "all8", None, None]
    mixed = logits(model, IDS, rt, rows).float()
    ref_model, _ = tiny_llama()
    METHOD.load(ref_model, cfg, tensors)
    ref = logits(ref_model, IDS)
    assert (mixed[0] - ref[0]).abs().max().item() < 0.05
    base_bf16 = logits(model, IDS).float()
    assert torch.equal(mixed[1], base_bf16[1])


def test_staging_is_invisible_until_apply_and_unstage_returns_the_slot(adapters: dict[str, Any], attached_logits: dict[str, torch.Tensor]) -> None:
    from adapterhub.protocols.method import StagingRuntime

    model, rt = loaded_runtime(adapters, ["all8"])
    assert isinstance(rt, StagingRuntime)
    before = logits(model, IDS, rt, ["all8"] * 5)
    base = logits(model, IDS)
    cfg, tensors = adapters["qv4"]
    plan = rt.plan("qv4", cfg, tensors)
    rt.stage(plan)
    assert plan.extra is not None and "staged" in plan.extra
    slot = plan.extra["staged"][0]
    # Copied, but serving nothing: every output is bit-identical and the id is unknown.
    assert torch.equal(logits(model, IDS, rt, ["all8"] * 5), before)
    assert torch.equal(logits(model, IDS), base)
    assert "qv4" not in rt.resident()
    rt.unstage(plan)
    rt.unstage(plan)  # idempotent
    assert "staged" not in plan.extra
    # The slot went back to the pool: the next adapter takes it.
    rt.apply(rt.plan("qv4", cfg, tensors))
    assert rt.slot_of("qv4") == slot
    assert (logits(model, IDS, rt, ["qv4"] * 5) - attached_logits["qv4"]).abs().max() <= TOL


def test_staged_plan_is_recopied_when_the_stacks_were_rebuilt(adapters: dict[str, Any], attached_logits: dict[str, torch.Tensor]) -> None:
    model, rt = loaded_runtime(adapters, ["qv4"])
    cfg, tensors = adapters["qv4"]
    plan = rt.plan("qv4-again", cfg, tensors)
    rt.stage(plan)
    assert plan.extra is not None and "staged" in plan.extra
    # A wider adapter (all linears, higher rank) wraps new layers and regrows the stacks.
    rt.apply(rt.plan("all8", *adapters["all8"]))
    rt.apply(plan)
    for name, rows in (("qv4", ["qv4-again"] * 5), ("all8", ["all8"] * 5)):
        assert (logits(model, IDS, rt, list(rows)) - attached_logits[name]).abs().max() <= TOL
    mixed = logits(model, IDS, rt, ["qv4-again", "all8", None, "qv4", "all8"])
    assert (mixed[0] - attached_logits["qv4"][0]).abs().max() <= TOL
    assert (mixed[1] - attached_logits["all8"][1]).abs().max() <= TOL
    assert torch.equal(mixed[2], logits(model, IDS)[2])


def test_stage_does_nothing_when_growth_is_needed(adapters: dict[str, Any]) -> None:
    model, rt = loaded_runtime(adapters, ["qv4"])
    plan = rt.plan("all8", *adapters["all8"])  # needs new layers and a higher rank
    rt.stage(plan)
    assert plan.extra is not None and "staged" not in plan.extra
    rt.apply(plan)
    assert set(rt.resident()) == {"qv4", "all8"}


def test_staged_plan_applies_after_close(adapters: dict[str, Any], attached_logits: dict[str, torch.Tensor]) -> None:
    model, rt = loaded_runtime(adapters, ["qv4"])
    plan = rt.plan("again", *adapters["qv4"])
    rt.stage(plan)
    rt.close()  # every layer unwrapped: the staged copy is gone with them
    rt.apply(plan)
    assert rt.resident() == ["again"]
    assert (logits(model, IDS, rt, ["again"] * 5) - attached_logits["qv4"]).abs().max() <= TOL


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MADV_DONTNEED and mincore are Linux calls")
def test_unused_slot_pages_are_given_back_and_used_slots_kept() -> None:
    import ctypes
    import os

    from adapterhub.plugins.lora.runtime import _release_pages_after

    page = os.sysconf("SC_PAGE_SIZE")
    stack = torch.full((8, 16, 1024), 3.0)  # 64 KiB per slot, every page touched
    _release_pages_after(stack, 3)
    libc = ctypes.CDLL("libc.so.6", use_errno=True)

    def resident_pages(addr: int, length: int) -> int:
        first, n = addr - addr % page, (addr % page + length + page - 1) // page
        vec = (ctypes.c_ubyte * n)()
        assert libc.mincore(ctypes.c_void_p(first), ctypes.c_size_t(n * page), vec) == 0
        return sum(v & 1 for v in vec)

    per_slot = 16 * 1024 * 4
    tail_start = -(-(stack.data_ptr() + 3 * per_slot) // page) * page
    tail_len = (stack.data_ptr() + 8 * per_slot) // page * page - tail_start
    assert resident_pages(tail_start, tail_len) == 0
    assert torch.all(stack[:3] == 3.0)  # the used slots are untouched
    assert torch.all(stack[4:7] == 0.0)  # whole released pages read as zeros (rewritten before use)


def test_slot_reuse_across_targets_and_ranks_leaves_nothing_behind(adapters: dict[str, Any], attached_logits: dict[str, torch.Tensor]) -> None:
    """Writes zero only what a slot's previous occupant may have left (each layer's
    extent). A random churn of loads, stages, unstages and removals over adapters with
    different targets and ranks must leave every resident slot holding exactly its
    adapter (zero-padded) in the layers it targets and zeros in every other layer, and
    every slot's ranks above its extent zero; mixed batches then match each adapter."""
    import random

    model, rt = loaded_runtime(adapters, ["all8"])  # every linear wrapped, r_max 8
    rt.apply(rt.plan("grow", *adapters["qv4"]))
    rt.apply(rt.plan("grow2", *adapters["qv4"]))  # capacity 4 -> 9: fresh slots to poison
    rt.remove("grow")
    rt.remove("grow2")
    # Never-written slots hold whatever torch.empty returned; fresh pages read as zero,
    # which would hide a missing zeroing, so make them NaN.
    for layer in (m for m in model.modules() if isinstance(m, MultiLoraLinear)):
        hw = rt._high_water
        layer.lora_A[hw:] = float("nan")
        layer.lora_B[hw:] = float("nan")
    # The plain reuse first: all8's slot goes to qv4 (fewer targets, lower rank), then mlp2.
    slot = rt.slot_of("all8")
    rt.remove("all8")
    rt.apply(rt.plan("qv4-reuse", *adapters["qv4"]))
    assert rt.slot_of("qv4-reuse") == slot
    rng = random.Random(5)
    resident: dict[str, str] = {"qv4-reuse": "qv4"}  # adapter id -> config name
    for step in range(150):
        name = rng.choice(list(CONFIGS))
        if resident and rng.random() < 0.45:
            victim = rng.choice(sorted(resident))
            rt.remove(victim)
            del resident[victim]
            continue
        plan = rt.plan(f"{name}-{step}", *adapters[name])
        rt.stage(plan)
        if rng.random() < 0.2:
            rt.unstage(plan)
            continue
        rt.apply(plan)
        resident[f"{name}-{step}"] = name
    assert resident
    for uid, name in resident.items():
        cfg, tensors = adapters[name]
        slot = rt.slot_of(uid)
        for path, layer in model.named_modules():
            if not isinstance(layer, MultiLoraLinear):
                continue
            a, b = layer.lora_A[slot], layer.lora_B[slot]
            key = f"{path}.lora_A"
            if key in tensors:
                r = cfg.r
                assert torch.equal(a[:r], tensors[key]) and torch.equal(b[:, :r], tensors[f"{path}.lora_B"]), (uid, path)
                assert torch.equal(a[r:], torch.zeros_like(a[r:])) and torch.equal(b[:, r:], torch.zeros_like(b[:, r:])), (uid, path)
            else:
                assert torch.equal(a, torch.zeros_like(a)) and torch.equal(b, torch.zeros_like(b)), (uid, path)
    for layer in (m for m in model.modules() if isinstance(m, MultiLoraLinear)):
        for slot in range(rt.capacity):
            e = layer.extent[slot]
            if e < layer.lora_A.shape[1]:
                assert torch.equal(layer.lora_A[slot, e:], torch.zeros_like(layer.lora_A[slot, e:]))
                assert torch.equal(layer.lora_B[slot, :, e:], torch.zeros_like(layer.lora_B[slot, :, e:]))
    uids = sorted(resident)
    rows: list[str | None] = [uids[i % len(uids)] for i in range(4)] + [None]
    mixed = logits(model, IDS, rt, rows)
    for i, uid in enumerate(rows):
        want = attached_logits[resident[uid]][i] if uid is not None else logits(tiny_llama()[0], IDS)[i]
        assert (mixed[i] - want).abs().max().item() <= TOL


def test_a_token_route_segments_chunks_and_gathers_decode_tokens(adapters: dict[str, Any]) -> None:
    from adapterhub.plugins.lora.layers import SEGMENT_MIN

    from adapterhub.host.packed import RowKV, packed_forward
    from adapterhub.protocols.method import PackedRuntime, TokenSpan

    model, rt = loaded_runtime(adapters)
    assert isinstance(rt, PackedRuntime) and rt.initial_kv("qv4") is None
    # Decode-like single tokens on two adapters and none, then a long chunk on a third.
    spans = [TokenSpan("qv4", 0, 1), TokenSpan("all8", 1, 3), TokenSpan("qv4", 4, 5), TokenSpan("mlp2", 5, 5 + SEGMENT_MIN + 2)]
    route = rt.build_token_route(spans, total=5 + SEGMENT_MIN + 2)
    assert route is not None and route.packed
    assert [g.slot for g in route.groups] == [rt.slot_of("mlp2")]  # the chunk: its own GEMM
    assert route.gather is not None and route.gather.count == 4  # the decode tokens: one gather
    one = rt.build_token_route([TokenSpan("all8", 0, 6)], total=6)
    assert one is not None and one.slot == rt.slot_of("all8")  # every token on one adapter: fast path
    with pytest.raises(AdapterUnloadedError):
        rt.build_token_route([TokenSpan("nope", 0, 1)], total=1)

    # Through the model: each request's logits equal the request alone.
    cfg = model.config
    heads = cfg.num_attention_heads
    dims = (cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.hidden_size // heads)
    reqs = [("qv4", IDS[0, :1]), ("all8", IDS[1, :2]), (None, IDS[2, :1]), ("qv4", IDS[3, :1]), ("mlp2", IDS[4, :SEGMENT_MIN + 2])]
    segs, ids, pos, token_spans, at = [], [], [], [], 0
    for name, t in reqs:
        segs.append(RowKV(*dims, len(t), dtype=torch.float32, device="cpu").chunk(len(t)))
        ids += t.tolist()
        pos += list(range(len(t)))
        if name is not None:
            token_spans.append(TokenSpan(name, at, at + len(t)))
        at += len(t)
    packed = packed_forward(model, torch.tensor([ids]), torch.tensor([pos]), segs, [(rt, token_spans)], torch.arange(at))
    at = 0
    for name, t in reqs:
        alone = logits(model, t[None], rt, [name])[0]
        assert (packed[at : at + len(t)] - alone).abs().max().item() <= TOL, name
        at += len(t)


def _wrapped_layers(model: Any) -> list[tuple[str, MultiLoraLinear]]:
    return [(p, m) for p, m in model.named_modules() if isinstance(m, MultiLoraLinear)]


def _alone(rt: LoraRuntime, layer: MultiLoraLinear, x: torch.Tensor, name: str | None) -> torch.Tensor:
    """``x`` through one layer with every row on ``name`` (the single-adapter fast path)."""
    with torch.no_grad(), rt.route([name] * x.shape[0], {}):
        return layer(x)


@pytest.mark.parametrize("seq", [1, 3, 8])  # below SEGMENT_MIN: the per-row gather; at it: segments
def test_grouped_rows_equal_each_row_on_its_adapter_alone(adapters: dict[str, Any], seq: int) -> None:
    from adapterhub.plugins.lora.layers import SEGMENT_MIN

    model, rt = loaded_runtime(adapters)
    # Repeated adapters on non-contiguous rows, rows with none, three ranks and target sets.
    rows: list[str | None] = ["all8", "qv4", None, "all8", "mlp2", "qv4", None, "all8"]
    route = rt.build_route(rows)
    assert route is not None and route.slot is None
    groups, gather = route.parts_for(len(rows), seq)
    assert (gather is None) == (seq >= SEGMENT_MIN)
    gen = torch.Generator().manual_seed(seq)
    for path, layer in _wrapped_layers(model):
        x = torch.randn(len(rows), seq, layer.in_features, generator=gen)
        with torch.no_grad(), rt.route(rows, {}):
            got = layer(x)
        base = layer.base_linear(x)  # the same base GEMM (a 1-row GEMM may round differently)
        for i, name in enumerate(rows):
            if name is None:
                assert torch.equal(got[i], base[i]), path  # no adapter: exactly the base
            else:
                want = _alone(rt, layer, x[i : i + 1], name)[0]
                assert (got[i] - want).abs().max().item() <= TOL, (path, i, name)
        # Beam search repeats each row consecutively; the route follows.
        with torch.no_grad(), rt.route(rows, {}):
            beams = layer(x.repeat_interleave(2, dim=0))
        assert (beams - got.repeat_interleave(2, dim=0)).abs().max().item() <= TOL, path


S = 8  # = SEGMENT_MIN (checked below): a run this long gets its own segment
PACKED_LAYOUTS = {
    # decode tokens, one on no adapter, a chunk whose adapter also has decode tokens
    "chunk-and-decode": [("qv4", 0, 1), ("all8", 1, 2), ("qv4", 2, 3), (None, 3, 4), ("qv4", 4, 4 + S + 3), ("mlp2", 4 + S + 3, 4 + S + 4)],
    # many short runs on one adapter (an index segment), a gap, two chunks of one adapter
    "short-runs-gap-two-chunks": [*((("all8" if t % 2 else "mlp2"), t, t + 1) for t in range(2 * S)),
                                  ("qv4", 2 * S + 2, 3 * S + 2), ("all8", 3 * S + 2, 3 * S + 4), ("qv4", 3 * S + 4, 4 * S + 4)],
    "one-adapter": [("mlp2", 0, 3), ("mlp2", 3, 3 + S)],
}


@pytest.mark.parametrize("layout", list(PACKED_LAYOUTS))
def test_route_tokens_equals_each_span_alone_on_every_linear(adapters: dict[str, Any], layout: str) -> None:
    from adapterhub.plugins.lora.layers import SEGMENT_MIN

    from adapterhub.protocols.method import TokenSpan

    assert S == SEGMENT_MIN
    model, rt = loaded_runtime(adapters)
    spans = [TokenSpan(*s) for s in PACKED_LAYOUTS[layout]]
    total = spans[-1].stop + 1  # one trailing token no span covers
    route = rt.build_token_route(spans, total)
    assert route is not None
    if layout == "chunk-and-decode":
        # qv4's chunk is a slice segment; its decode tokens join the gather of the rest.
        assert [(g.slot, g.sel) for g in route.groups] == [(rt.slot_of("qv4"), slice(4, 4 + S + 3))]
        gathered = route.gather  # every short run in one gather, mlp2's last token too
        assert gathered is not None and torch.equal(gathered.sel, torch.tensor([0, 1, 2, 4 + S + 3]))  # type: ignore[arg-type]
        assert gathered.index.tolist() == [rt.slot_of(n) for n in ("qv4", "all8", "qv4", "mlp2")]
    elif layout == "short-runs-gap-two-chunks":
        # Short runs adding up to S or more (all8's 8 + 2 tokens, mlp2's 8): index
        # segments, nothing gathered; qv4's two chunks: two slices.
        kinds = sorted((g.slot, isinstance(g.sel, slice), g.count) for g in route.groups)
        assert kinds == sorted([(rt.slot_of("all8"), False, S + 2), (rt.slot_of("mlp2"), False, S),
                                (rt.slot_of("qv4"), True, S), (rt.slot_of("qv4"), True, S)])
        assert route.gather is None
    else:
        assert route.slot is None  # the trailing token is on no adapter: not the fast path
        assert rt.build_token_route(spans, spans[-1].stop).slot == rt.slot_of("mlp2")  # type: ignore[union-attr]
    owner: list[str | None] = [None] * total
    for sp in spans:
        owner[sp.start : sp.stop] = [sp.adapter_id] * (sp.stop - sp.start)
    gen = torch.Generator().manual_seed(7)
    for path, layer in _wrapped_layers(model):
        x = torch.randn(1, total, layer.in_features, generator=gen)
        with torch.no_grad(), rt.route_tokens(spans, {"input_ids": torch.zeros(1, total, dtype=torch.long)}):
            got = layer(x)[0]
        base = layer.base_linear(x)[0]
        for t, name in enumerate(owner):
            if name is None:
                assert torch.equal(got[t], base[t]), (path, t)
        for sp in spans:
            if sp.adapter_id is not None and sp.stop > sp.start:
                want = _alone(rt, layer, x[:, sp.start : sp.stop], sp.adapter_id)[0]
                assert (got[sp.start : sp.stop] - want).abs().max().item() <= TOL, (path, sp)
    assert rt._router.route is None  # the context ended


def test_route_tokens_errors(adapters: dict[str, Any]) -> None:
    from adapterhub.protocols.method import TokenSpan

    _, rt = loaded_runtime(adapters)
    inputs = {"input_ids": torch.zeros(1, 6, dtype=torch.long)}
    with pytest.raises(AdapterUnloadedError, match="'nope'"):
        with rt.route_tokens([TokenSpan("qv4", 0, 2), TokenSpan("nope", 2, 6)], inputs):
            pass
    bad = ([TokenSpan("qv4", 0, 4), TokenSpan("all8", 3, 6)],  # overlapping: two updates on token 3
           [TokenSpan("qv4", 3, 6), TokenSpan("all8", 0, 2)],  # not sorted
           [TokenSpan("qv4", 0, 7)])  # past T
    for spans in bad:
        with pytest.raises(ValueError, match="sorted, disjoint and inside"):
            with rt.route_tokens(spans, inputs):
                pass
    assert rt._router.route is None
    with rt.route_tokens([TokenSpan(None, 0, 6)], inputs) as kwargs:
        assert kwargs is inputs and rt._router.route is None  # nothing on LoRA: the bare base
