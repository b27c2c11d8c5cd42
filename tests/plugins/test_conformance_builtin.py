"""The public method conformance suite over every built-in method in the catalog."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import torch

from adapterhub.catalog import get_catalog
from adapterhub.defaults import DEFAULT_PLUGINS
from adapterhub.testing.methods import (
    CHECKS,
    ConformanceError,
    MethodCase,
    check_method,
    conformance_params,
    run_check,
)
from adapterhub.testing.models import tiny_llama

EXPECTED = {"lora", "prefix-tuning", "layer-selective", "full"}

# Small but non-trivial configs; every built-in method must appear here (checked below),
# so a new built-in cannot slip past the suite.
CONFIGS: dict[str, list[dict[str, Any]]] = {
    "lora": [{"r": 4, "alpha": 8.0, "dropout": 0.1}],
    "prefix-tuning": [{"num_virtual_tokens": 4}, {"num_virtual_tokens": 3, "projection": True}],
    "layer-selective": [{}, {"layers": "1", "kinds": ["attention", "mlp"]}],
    "full": [{}],
}


def _factory() -> torch.nn.Module:
    return tiny_llama(seed=0)[0]  # type: ignore[no-any-return]


def _builtin_methods() -> dict[str, Any]:
    cat = get_catalog()
    return {n: m for n, m in cat.methods.items() if cat.owner("methods", n) in DEFAULT_PLUGINS}


def _cases() -> list[MethodCase]:
    cases = []
    for name, method in sorted(_builtin_methods().items()):
        for i, raw in enumerate(CONFIGS.get(name, [{}])):
            cfg = method.config_cls.model_validate(raw)
            cases.append(MethodCase(method, cfg, _factory, id=f"{name}{i or ''}"))
    return cases


CASES = _cases()


def test_every_builtin_method_is_covered() -> None:
    found = set(_builtin_methods())
    assert EXPECTED <= found, f"built-in methods missing from the catalog: {sorted(EXPECTED - found)}"
    assert found <= set(CONFIGS), f"add a conformance config for {sorted(found - set(CONFIGS))}"


@pytest.mark.parametrize(("case", "check"), conformance_params(CASES))
def test_conformance(case: MethodCase, check: str) -> None:
    run_check(case, check)


def test_check_method_reports_passed_and_skipped() -> None:
    method = get_catalog().method("full")
    report = check_method(method, method.config_cls(), _factory, steps=1, only=["protocol", "runtime", "runtime_remove"])
    assert report.method == "full"
    assert report.passed == ["protocol", "runtime"]  # runtime: runtime() raised NotImplementedError
    assert report.skipped == {"runtime_remove": "capabilities.hot_swap is False"}
    with pytest.raises(KeyError, match="unknown conformance check"):
        check_method(method, method.config_cls(), _factory, only=["nope"])
    assert set(CHECKS) >= {"save_load_round_trip", "detach_restores_base", "deterministic"}


# --- the suite must catch broken methods (a check that cannot fail is worthless) ----------------
class _Wrapped:
    """Delegates everything to a real method; subclasses break one thing on purpose."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.kind, self.description = inner.name, inner.kind, inner.description
        self.config_cls, self.capabilities = inner.config_cls, inner.capabilities

    def attach(self, model: torch.nn.Module, config: Any) -> Any:
        return self.inner.attach(model, config)

    def validate(self, model: torch.nn.Module, config: Any, tensors: Any) -> None:
        self.inner.validate(model, config, tensors)

    def load(self, model: torch.nn.Module, config: Any, tensors: Any) -> Any:
        return self.inner.load(model, config, tensors)

    def runtime(self, model: torch.nn.Module) -> Any:
        return self.inner.runtime(model)


class _Leaky(_Wrapped):
    """``detach`` forgets to restore the final norm."""

    def attach(self, model: torch.nn.Module, config: Any) -> Any:
        adapter = self.inner.attach(model, config)
        real_detach = adapter.detach

        def detach() -> None:
            norm = model.get_parameter("model.norm.weight")
            keep = norm.detach().clone()
            real_detach()
            with torch.no_grad():
                norm.copy_(keep)

        adapter.detach = detach
        return adapter


class _Sloppy(_Wrapped):
    """``validate``/``load`` accept anything."""

    def validate(self, model: torch.nn.Module, config: Any, tensors: Any) -> None:
        return None

    def load(self, model: torch.nn.Module, config: Any, tensors: Any) -> Any:
        return self.inner.attach(model, config)


class _Greedy(_Wrapped):
    """``attach`` also leaves lm_head trainable without reporting it."""

    def attach(self, model: torch.nn.Module, config: Any) -> Any:
        adapter = self.inner.attach(model, config)
        model.get_parameter("lm_head.weight").requires_grad_(True)
        return adapter


class _HalfSwapRuntime:
    """A runtime whose failed plan leaves the base half-swapped (the peft failure mode)."""

    def __init__(self, inner: Any, model: torch.nn.Module) -> None:
        self.inner, self.model = inner, model
        self.apply, self.remove, self.resident, self.route = inner.apply, inner.remove, inner.resident, inner.route

    def plan(self, adapter_id: str, config: Any, tensors: Any) -> Any:
        try:
            return self.inner.plan(adapter_id, config, tensors)
        except Exception:
            with torch.no_grad():  # "swapped" the tensors that were fine, then gave up
                for name, t in list(tensors.items())[:-1]:
                    self.model.get_parameter(name).copy_(t)
            raise


class _HalfSwap(_Wrapped):
    def runtime(self, model: torch.nn.Module) -> Any:
        return _HalfSwapRuntime(self.inner.runtime(model), model)


@pytest.mark.parametrize(
    ("broken", "check", "needle"),
    [
        (_Leaky, "detach_restores_base", "base tensor 'model.norm.weight' is not bit-identical after detach"),
        (_Sloppy, "validate_rejects", r"validate\(\) of a state missing .* was accepted"),
        (_Greedy, "attach_trainable", "'model.embed_tokens.weight' requires grad but is not in trainable_parameters"),
        (_HalfSwap, "runtime_failed_plan", "a base parameter of shape .* changed by a failed plan"),
    ],
)
def test_suite_catches_broken_methods(broken: type[_Wrapped], check: str, needle: str) -> None:
    inner = get_catalog().method("layer-selective")
    with pytest.raises(ConformanceError, match=f"layer-selective\\] {check}: {needle}"):
        check_method(broken(inner), inner.config_cls(), _factory, only=[check])  # type: ignore[arg-type]


class _ForgetfulRuntime:
    """A runtime that selects its adapter only on a row's first forward (empty cache):
    decode steps silently run on the bare base, the bug ``route_decode`` exists for."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.plan, self.apply, self.remove, self.resident = inner.plan, inner.apply, inner.remove, inner.resident

    @contextlib.contextmanager
    def route(self, rows: Any, inputs: dict[str, Any]) -> Any:
        cache = inputs.get("cache", inputs.get("past_key_values"))
        if cache is not None and cache.get_seq_length() > 0:
            yield inputs
            return
        with self.inner.route(rows, inputs) as kwargs:
            yield kwargs


class _Forgetful(_Wrapped):
    def runtime(self, model: torch.nn.Module) -> Any:
        return _ForgetfulRuntime(self.inner.runtime(model))


def test_suite_catches_a_route_that_forgets_decode_steps() -> None:
    inner = get_catalog().method("lora")
    with pytest.raises(ConformanceError, match=r"lora\] route_decode: logits of forwards continuing a cached row"):
        check_method(_Forgetful(inner), inner.config_cls(), _factory, only=["route_decode"])  # type: ignore[arg-type]


class _FirstSpanOnlyRuntime(_ForgetfulRuntime):
    """A packed runtime that routes only the first token span (the others silently run on
    the bare base): the kind of bug ``route_tokens`` exists for."""

    def route_tokens(self, spans: Any, inputs: dict[str, Any]) -> Any:
        return self.inner.route_tokens(list(spans)[:1], inputs)

    def initial_kv(self, adapter_id: str) -> Any:
        return self.inner.initial_kv(adapter_id)


class _FirstSpanOnly(_Wrapped):
    def runtime(self, model: torch.nn.Module) -> Any:
        return _FirstSpanOnlyRuntime(self.inner.runtime(model))


def test_suite_catches_a_packed_route_that_drops_spans() -> None:
    inner = get_catalog().method("lora")
    with pytest.raises(ConformanceError, match=r"lora\] route_tokens: request 2 \(conf-b\) in packed forwards"):
        check_method(_FirstSpanOnly(inner), inner.config_cls(), _factory, only=["route_tokens"])  # type: ignore[arg-type]


def test_route_tokens_applies_only_to_packed_runtimes() -> None:
    inner = get_catalog().method("lora")
    # The forgetful runtime has no route_tokens: not a PackedRuntime, so no check.
    report = check_method(_Forgetful(inner), inner.config_cls(), _factory, only=["route_tokens"])  # type: ignore[arg-type]
    assert "route_tokens" in report.skipped and not report.passed
