"""layer-selective serving side: plan/apply/route swaps in and out bit-exact."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from adapterhub.plugins.layer_select import METHOD, LayerSelectiveConfig

from adapterhub.errors import AdapterUnloadedError, IncompatibleAdapterError
from adapterhub.protocols import MethodRuntime
from adapterhub.testing.models import tiny_llama

CFG_A = LayerSelectiveConfig(layers="1", kinds=("mlp", "norm"))
CFG_B = LayerSelectiveConfig(kinds=("norm",))  # overlaps A on layer 1's norms


def _model() -> Any:
    return tiny_llama(seed=0)[0]


def _inputs() -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 256, (3, 9), generator=torch.Generator().manual_seed(2))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@torch.no_grad()
def _logits(model: Any, kwargs: dict[str, Any] | None = None) -> torch.Tensor:
    return model(**(kwargs or _inputs())).logits.clone()


def _adapter(cfg: LayerSelectiveConfig, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Trained tensors and the logits the attached adapter gives (the reference)."""
    model = _model()
    adapter = METHOD.attach(model, cfg)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(adapter.trainable_parameters(), lr=2e-2)
    batch = _inputs()
    for _ in range(2):
        model(**batch, labels=batch["input_ids"]).loss.backward()
        opt.step()
        opt.zero_grad()
    return adapter.adapter_state(), _logits(model)


@pytest.fixture(scope="module")
def trained() -> dict[str, tuple[dict[str, torch.Tensor], torch.Tensor]]:
    return {"a": _adapter(CFG_A, 0), "b": _adapter(CFG_B, 1)}


def _snapshot(model: Any) -> dict[str, tuple[int, int, torch.Tensor]]:
    return {n: (id(p), p.data_ptr(), p.detach().clone()) for n, p in model.named_parameters()}


def _assert_same(model: Any, snap: dict[str, tuple[int, int, torch.Tensor]]) -> None:
    now = dict(model.named_parameters())
    assert now.keys() == snap.keys()
    for n, (pid, ptr, value) in snap.items():
        p = now[n]
        assert id(p) == pid and p.data_ptr() == ptr, f"{n} was replaced, not copied into"
        assert torch.equal(p.detach(), value), f"{n} not restored bit for bit"


def test_swap_in_and_out_bit_exact(trained: Any) -> None:
    model = _model()
    snap, base = _snapshot(model), _logits(model)
    rt = METHOD.runtime(model)
    assert isinstance(rt, MethodRuntime)
    for key, cfg in (("a", CFG_A), ("b", CFG_B)):
        plan = rt.plan(key, cfg, trained[key][0])
        assert plan.nbytes == sum(t.numel() * 4 for t in trained[key][0].values())
        _assert_same(model, snap)  # plan changes nothing
        rt.apply(plan)
    assert list(rt.resident()) == ["a", "b"]
    _assert_same(model, snap)  # apply changes nothing in the model either
    for _ in range(2):  # swap back and forth: a, b, a, b
        for key in ("a", "b"):
            with rt.route([key, key, key], _inputs()) as kwargs:
                assert torch.equal(_logits(model, kwargs), trained[key][1])
            _assert_same(model, snap)
            assert torch.equal(_logits(model), base)


def test_rows_without_adapter_and_mixed_rows(trained: Any) -> None:
    model = _model()
    base = _logits(model)
    rt = METHOD.runtime(model)
    rt.apply(rt.plan("a", CFG_A, trained["a"][0]))
    rt.apply(rt.plan("b", CFG_B, trained["b"][0]))
    inputs = _inputs()
    with rt.route([None, None, None], inputs) as kwargs:
        assert kwargs is inputs and torch.equal(_logits(model, kwargs), base)
    with pytest.raises(IncompatibleAdapterError, match="rows without an adapter cannot share"):
        with rt.route([None, "a", None], inputs):
            pass
    with pytest.raises(IncompatibleAdapterError, match="only one; rows name 'a', 'b'"):
        with rt.route(["a", "b", None], inputs):
            pass
    assert torch.equal(_logits(model), base)


def test_failed_plan_leaves_everything_intact(trained: Any) -> None:
    model = _model()
    snap = _snapshot(model)
    rt = METHOD.runtime(model)
    rt.apply(rt.plan("a", CFG_A, trained["a"][0]))
    bad = dict(trained["b"][0])
    last = list(bad)[-1]
    bad[last] = torch.ones(bad[last].shape[0] + 1)
    with pytest.raises(IncompatibleAdapterError, match=f"{last}.*shape"):
        rt.plan("b", CFG_B, bad)
    assert list(rt.resident()) == ["a"]
    _assert_same(model, snap)
    with rt.route(["a"] * 3, _inputs()) as kwargs:
        assert torch.equal(_logits(model, kwargs), trained["a"][1])
    _assert_same(model, snap)


def test_exception_inside_route_restores(trained: Any) -> None:
    model = _model()
    snap = _snapshot(model)
    rt = METHOD.runtime(model)
    rt.apply(rt.plan("a", CFG_A, trained["a"][0]))
    with pytest.raises(RuntimeError, match="boom"):
        with rt.route(["a"], _inputs()):
            name = "model.layers.1.input_layernorm.weight"
            assert torch.equal(model.get_parameter(name), trained["a"][0][name])  # swapped in
            raise RuntimeError("boom")
    _assert_same(model, snap)
    with rt.route(["a"], _inputs()):  # the runtime is usable again afterwards
        with pytest.raises(IncompatibleAdapterError, match="inside the route"):
            with rt.route(["a"], _inputs()):
                pass
    _assert_same(model, snap)


def test_remove(trained: Any) -> None:
    model = _model()
    snap = _snapshot(model)
    rt = METHOD.runtime(model)
    rt.apply(rt.plan("a", CFG_A, trained["a"][0]))
    rt.apply(rt.plan("b", CFG_B, trained["b"][0]))
    with rt.route(["a"], _inputs()):
        with pytest.raises(IncompatibleAdapterError, match="in use"):
            rt.remove("a")
    rt.remove("a")
    assert list(rt.resident()) == ["b"]
    with pytest.raises(AdapterUnloadedError, match="'a' is not resident"):
        with rt.route(["a"], _inputs()):
            pass
    with pytest.raises(AdapterUnloadedError):
        rt.remove("a")
    with rt.route(["b"], _inputs()) as kwargs:
        assert torch.equal(_logits(model, kwargs), trained["b"][1])
    rt.remove("b")
    assert list(rt.resident()) == []
    _assert_same(model, snap)


def test_plan_converts_to_the_base_dtype(trained: Any) -> None:
    model = tiny_llama(seed=0, dtype=torch.bfloat16)[0]
    snap = _snapshot(model)
    rt = METHOD.runtime(model)
    plan = rt.plan("a", CFG_A, trained["a"][0])  # fp32 adapter onto a bf16 base
    assert all(t.dtype == torch.bfloat16 and t.device.type == "cpu" for t in plan.tensors.values())
    assert plan.nbytes == sum(t.numel() * 2 for t in trained["a"][0].values())
    rt.apply(plan)
    with rt.route(["a"], _inputs()):
        name = "model.layers.1.mlp.up_proj.weight"
        assert torch.equal(model.get_parameter(name), trained["a"][0][name].bfloat16())
    _assert_same(model, snap)


def _packed() -> dict[str, torch.Tensor]:
    """A packed forward's inputs: batch 1, T = 9 tokens."""
    ids = _inputs()["input_ids"][:1]
    return {"input_ids": ids, "position_ids": torch.arange(ids.shape[1])[None]}


def test_route_tokens_on_one_adapter_is_route_of_that_adapter(trained: Any) -> None:
    from adapterhub.protocols.method import PackedRuntime, TokenSpan

    model = _model()
    snap = _snapshot(model)
    rt = METHOD.runtime(model)
    rt.apply(rt.plan("a", CFG_A, trained["a"][0]))
    assert isinstance(rt, PackedRuntime) and rt.initial_kv("a") is None
    inputs = _packed()
    with rt.route(["a"], inputs) as kwargs:
        want = _logits(model, kwargs)
    assert (want - _logits(model, inputs)).abs().max() > 1e-3  # the adapter matters
    for spans in ([TokenSpan("a", 0, 9)], [TokenSpan("a", 0, 4), TokenSpan("a", 4, 4), TokenSpan("a", 4, 9)]):
        with rt.route_tokens(spans, inputs) as kwargs:
            assert kwargs is inputs and torch.equal(_logits(model, kwargs), want)
        _assert_same(model, snap)
    for spans in ([], [TokenSpan(None, 0, 9)]):  # no token on a selective adapter: the base
        with rt.route_tokens(spans, inputs) as kwargs:
            assert torch.equal(_logits(model, kwargs), _logits(model, inputs))
    with pytest.raises(AdapterUnloadedError, match="'b'"):
        with rt.route_tokens([TokenSpan("b", 0, 9)], inputs):
            pass


@pytest.mark.parametrize(
    ("spans", "needle"),
    [
        ([("a", 0, 4), ("b", 4, 9)], "one packed forward can use only one; its token spans name 'a', 'b'"),
        ([("a", 0, 4), (None, 4, 6), ("a", 6, 9)], r"tokens \[4, 6\) are on no adapter"),
        ([("a", 0, 4), ("a", 6, 9)], r"tokens \[4, 6\) are on no adapter"),  # a gap
        ([("a", 2, 9)], r"tokens \[0, 2\) are on no adapter"),
        ([("a", 0, 7)], r"tokens \[7, 9\) are on no adapter"),  # T from input_ids
    ],
)
def test_route_tokens_refuses_a_forward_it_cannot_swap_for(trained: Any, spans: list[Any], needle: str) -> None:
    from adapterhub.protocols.method import TokenSpan

    model = _model()
    snap = _snapshot(model)
    rt = METHOD.runtime(model)
    rt.apply(rt.plan("a", CFG_A, trained["a"][0]))
    rt.apply(rt.plan("b", CFG_B, trained["b"][0]))
    with pytest.raises(IncompatibleAdapterError, match=needle) as err:
        with rt.route_tokens([TokenSpan(*s) for s in spans], _packed()):
            pass
    assert "\n" not in str(err.value)
    _assert_same(model, snap)


def test_route_tokens_refuses_spans_that_break_the_protocol(trained: Any) -> None:
    from adapterhub.protocols.method import TokenSpan

    rt = METHOD.runtime(_model())
    rt.apply(rt.plan("a", CFG_A, trained["a"][0]))
    for spans in ([TokenSpan("a", 0, 5), TokenSpan("a", 3, 9)], [TokenSpan("a", 0, 10)]):
        with pytest.raises(ValueError, match="sorted, disjoint and inside"):
            with rt.route_tokens(spans, _packed()):
                pass
