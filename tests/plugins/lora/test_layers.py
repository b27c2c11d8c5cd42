"""LoRA layers in isolation: biases, 2-D inputs, gradients, and a non-Llama model."""

from __future__ import annotations

import pytest
import torch
from adapterhub.plugins.lora.layers import (
    SEGMENT_MIN,
    Gather,
    LoraLinear,
    MultiLoraLinear,
    Route,
    Router,
    SlotGroup,
    select,
)
from torch import nn


def _reference(x: torch.Tensor, lin: nn.Linear, a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    # peft's formula, written out
    return lin(x) + (x @ a.t() @ b.t()) * scale


@pytest.mark.parametrize("shape", [(3, 5, 6), (7, 6)])
def test_lora_linear_matches_the_formula_and_its_gradients(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    lin = nn.Linear(6, 4, bias=True)
    layer = LoraLinear(lin, r=3, scaling=0.5, dropout=0.0, init="kaiming")
    with torch.no_grad():
        layer.lora_B.normal_()
    a = layer.lora_A.detach().clone().requires_grad_(True)
    b = layer.lora_B.detach().clone().requires_grad_(True)
    x = torch.randn(*shape, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    ours = layer(x)
    ref = _reference(x_ref, lin, a, b, 0.5)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() <= 1e-5
    g = torch.randn_like(ref)
    ours.backward(g)
    ref.backward(g)
    assert layer.lora_A.grad is not None and a.grad is not None
    assert (layer.lora_A.grad - a.grad).abs().max().item() <= 1e-5
    assert layer.lora_B.grad is not None and b.grad is not None
    assert (layer.lora_B.grad - b.grad).abs().max().item() <= 1e-5
    assert x.grad is not None and x_ref.grad is not None
    assert (x.grad - x_ref.grad).abs().max().item() <= 1e-5
    assert layer.weight is lin.weight and layer.bias is lin.bias
    assert set(dict(layer.named_parameters())) == {"weight", "bias", "lora_A", "lora_B"}


def test_multi_lora_linear_paths_with_bias_and_2d_input() -> None:
    torch.manual_seed(1)
    lin = nn.Linear(6, 4, bias=True)
    router = Router()
    layer = MultiLoraLinear(lin, router, capacity=4, r_max=3, zero_slots=1)
    pairs = {1: (torch.randn(3, 6), torch.randn(4, 3)), 2: (torch.randn(2, 6), torch.randn(4, 2))}
    for slot, (a, b) in pairs.items():
        layer.write_slot(slot, a, b)
    x = torch.randn(3, 6)  # (batch, in): one token per row
    with torch.no_grad():
        assert torch.equal(layer(x), lin(x))  # no route: exactly the base
        router.route = Route(mask=1 << 2, rank=2, slot=2, scale=1.5)
        single = layer(x)
        router.route = Route(
            mask=(1 << 1) | (1 << 2), rank=3, rows=3,
            groups=(SlotGroup(1, 0.5, 3, slice(0, 1), 1), SlotGroup(2, 1.5, 2, slice(2, 3), 1)),
        )
        mixed = layer(x)
        router.route = None
    ref2 = _reference(x, lin, *pairs[2], 1.5)
    assert (single - ref2).abs().max().item() <= 1e-5
    assert (mixed[0] - _reference(x[:1], lin, *pairs[1], 0.5)[0]).abs().max().item() <= 1e-5
    assert torch.equal(mixed[1], lin(x[1:2])[0])
    assert (mixed[2] - ref2[2]).abs().max().item() <= 1e-5


def test_route_parts_follow_repeated_rows_and_reject_a_batch_they_cannot_map() -> None:
    gather = Gather(slice(0, 2), torch.tensor([1, 0]), torch.ones(2, 1, 1), 1, 2)
    route = Route(mask=2, rank=1, rows=2, groups=(SlotGroup(1, 1.0, 1, torch.tensor([0]), 1),), gather=gather)
    (g,), none = route.parts_for(4, seq=SEGMENT_MIN)  # long rows: segments
    assert g.sel.tolist() == [0, 1] and g.count == 2 and none is None  # type: ignore[union-attr]
    groups, got = route.parts_for(4, seq=1)  # decode rows: the gather
    assert groups == () and got is not None and got.index.tolist() == [1, 1, 0, 0] and got.sel == slice(0, 4)
    route = Route(mask=2, rank=1, rows=3, groups=(SlotGroup(1, 1.0, 1, slice(1, 3), 2),))
    assert route.parts_for(6, seq=1)[0][0].sel == slice(2, 6)
    with pytest.raises(RuntimeError, match="3 rows but the forward got a batch of 4"):
        route.parts_for(4, seq=1)


def _stacked_layer(slots: int = 4) -> tuple[nn.Linear, Router, MultiLoraLinear, dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(3)
    lin = nn.Linear(8, 5, bias=True)
    router = Router()
    layer = MultiLoraLinear(lin, router, capacity=slots + 1, r_max=4, zero_slots=1)
    pairs = {s: (torch.randn(r, 8), torch.randn(5, r)) for s, r in zip(range(1, slots + 1), (4, 2, 3, 1), strict=False)}
    for slot, (a, b) in pairs.items():
        layer.write_slot(slot, a, b)
    return lin, router, layer, pairs


@pytest.mark.parametrize("layout", ["contiguous", "scattered"])
def test_grouped_rows_equal_each_row_alone(layout: str) -> None:
    lin, router, layer, pairs = _stacked_layer()
    # Rows on slots 1, 3, none, 1, 2: slot 1's rows are not contiguous when scattered.
    slots = [1, 1, 3, 0, 2] if layout == "contiguous" else [1, 3, 0, 1, 2]
    scale = {1: 0.5, 2: 2.0, 3: 1.25}
    x = torch.randn(len(slots), 3, 8)
    groups = []
    for s in sorted(set(slots) - {0}):
        idx = [i for i, v in enumerate(slots) if v == s]
        groups.append(SlotGroup(s, scale[s], pairs[s][0].shape[0], select(idx, torch.device("cpu")), len(idx)))
    with torch.no_grad():
        router.route = Route(mask=sum(1 << s for s in set(slots) - {0}), rank=4, rows=len(slots), groups=tuple(groups))
        got = layer(x)
        router.route = None
    for i, s in enumerate(slots):
        want = lin(x[i]) if s == 0 else _reference(x[i : i + 1], lin, *pairs[s], scale[s])[0]
        if s == 0:
            assert torch.equal(got[i], want)  # rows without an adapter read exactly the base
        else:
            assert (got[i] - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("gathered", [False, True])
def test_packed_token_groups_equal_each_token_run_alone(gathered: bool) -> None:
    lin, router, layer, pairs = _stacked_layer()
    # A packed (1, T) forward: 3 decode tokens on slots 2, 2, 1, one on none, then a
    # 6-token chunk on slot 3; the decode tokens segmented or gathered (BGMV-style).
    spans = [(2, 0, 2), (1, 2, 3), (0, 3, 4), (3, 4, 10)]
    x = torch.randn(1, 10, 8)
    groups = []
    for s in (1, 2, 3) if not gathered else (3,):
        idx = [t for slot, a, b in spans if slot == s for t in range(a, b)]
        groups.append(SlotGroup(s, 1.5, pairs[s][0].shape[0], select(idx, torch.device("cpu")), len(idx)))
    gather = None
    if gathered:
        gather = Gather(torch.tensor([0, 1, 2]), torch.tensor([2, 2, 1]), torch.full((3, 1, 1), 1.5), 4, 3)
    with torch.no_grad():
        router.route = Route(mask=0b1110, rank=4, groups=tuple(groups), gather=gather, packed=True)
        got = layer(x)[0]
        router.route = None
    for s, a, b in spans:
        want = lin(x[0, a:b]) if s == 0 else _reference(x[:, a:b], lin, *pairs[s], 1.5)[0]
        if s == 0:
            assert torch.equal(got[a:b], want)
        else:
            assert (got[a:b] - want).abs().max().item() <= 1e-5
