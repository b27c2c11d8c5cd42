"""The conformance suite for method plugins (built-in and third-party alike).

Run all checks on one method::

    from adapterhub.testing.methods import check_method
    report = check_method(METHOD, MyConfig(), lambda: tiny_llama()[0])
    print(report.passed, report.skipped)   # raises ConformanceError on the first failure

or one pytest test per check (skips are reported by pytest, never silent)::

    from adapterhub.testing.methods import MethodCase, conformance_params, run_check
    CASES = [MethodCase(METHOD, MyConfig(), lambda: tiny_llama()[0])]

    @pytest.mark.parametrize(("case", "check"), conformance_params(CASES))
    def test_conformance(case, check):
        run_check(case, check)

``model_factory`` must return a *fresh* Hugging Face causal LM (``model(input_ids=...,
attention_mask=..., labels=...)`` gives ``.loss`` and ``.logits``) with the *same
weights on every call* (e.g. ``tiny_llama(seed=0)[0]``). The checks, in order:

* ``protocol``: the object implements ``Method``; ``kind`` and ``capabilities`` are
  valid; the config is a frozen, ``extra="forbid"`` pydantic model that survives a JSON
  round trip (that is how manifests store it).
* ``attach_trainable``: ``attach`` gives a ``TrainableAdapter``; exactly its
  ``trainable_parameters()`` require grad (base weights frozen, except the selected
  ones for ``selective`` and all of them for ``full``).
* ``training_changes_outputs``: ``steps`` AdamW steps give finite losses and change
  the logits.
* ``save_load_round_trip``: ``adapter_state()`` is detached, contiguous CPU tensors not
  aliasing the model; ``save_safetensors`` → ``load_safetensors`` → ``load`` on a fresh
  base gives identical logits (``roundtrip_atol``, default 0: bit-identical).
* ``detach_restores_base``: after attach + training + ``detach`` the base is back bit
  for bit: same state-dict names, values and dtypes, same ``Parameter`` objects, same
  module tree, no leftover hooks, identical logits.
* ``deterministic``: two seeded runs give identical adapter tensors.
* ``validate_rejects``: a missing key, an unexpected key and a wrong-shaped tensor each
  raise ``IncompatibleAdapterError`` from ``validate`` and ``load``, and a failed
  ``load`` leaves the base untouched.
* ``runtime`` (``hot_swap``): ``plan`` changes nothing; ``apply`` then ``route`` gives the
  attached adapter's logits (``route_atol``, default 1e-5); outside a route the base
  is bit-identical. Without ``hot_swap``, ``runtime()`` must raise
  ``NotImplementedError``.
* ``runtime_failed_plan`` (``hot_swap``): a plan whose last tensor is wrong-shaped raises
  ``IncompatibleAdapterError`` and leaves residency and outputs bit-identical.
* ``runtime_remove`` (``hot_swap``): ``remove`` drops the adapter, others keep their
  exact outputs, routing the removed one raises, the base is bit-identical at the end.
* ``mixed_batch`` (``mixed_batch``): one batch with rows on two adapters and a row on
  none equals each row run alone (``route_atol``).
* ``route_tokens`` (runtimes implementing ``PackedRuntime``): requests on different
  adapters laid end to end in packed forwards equal each request run alone
  (:mod:`adapterhub.testing.packed_checks`). Not generated for other runtimes.
* ``route_decode`` (``hot_swap``): what the serving engine relies on. ``route`` is
  entered on *every* forward of a row: its first one (empty cache) and each that
  continues it (a decode step, a later prefill chunk) with the cache, the mask the
  first route yielded plus one column per new token, and positions continuing from the
  last one it used. The continued forward's logits must equal one forward over the
  whole sequence (``route_atol``).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from adapterhub.errors import IncompatibleAdapterError
from adapterhub.protocols.method import (
    Capabilities,
    Method,
    MethodConfig,
    MethodRuntime,
    SwapPlan,
    TrainableAdapter,
)
from adapterhub.safeio import load_safetensors, save_safetensors

ModelFactory = Callable[[], torch.nn.Module]
METHOD_KINDS = ("reparameterization", "additive", "selective", "full")


class ConformanceError(AssertionError):
    """A method plugin broke the method protocol; the message says which check and how."""


class NotApplicable(Exception):
    """The check does not apply to this method (e.g. runtime checks without hot_swap)."""


@dataclass
class MethodCase:
    """One method + config + base model under test, with the knobs of the suite."""

    method: Method
    config: MethodConfig
    model_factory: ModelFactory
    steps: int = 3
    seed: int = 0
    lr: float = 1e-2
    batch: int = 3
    seq_len: int = 8
    route_atol: float = 1e-5
    roundtrip_atol: float = 0.0
    id: str | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.id or str(getattr(self.method, "name", "method"))


# --- helpers ---------------------------------------------------------------------------------------
def _fail(case: MethodCase, check: str, msg: str) -> ConformanceError:
    return ConformanceError(f"[{case.name}] {check}: {msg}")


def _inputs(case: MethodCase, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 256) or 256)
    gen = torch.Generator().manual_seed(1234)
    ids = torch.randint(0, vocab, (case.batch, case.seq_len), generator=gen)
    device = next(model.parameters()).device
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


@torch.no_grad()
def _logits(model: torch.nn.Module, kwargs: dict[str, Any]) -> torch.Tensor:
    model.eval()
    out = model(**kwargs)
    logits = out.logits if hasattr(out, "logits") else out[0]
    return logits.detach().float().cpu().clone()


def _train(case: MethodCase, model: torch.nn.Module, adapter: TrainableAdapter, check: str) -> list[float]:
    torch.manual_seed(case.seed)
    opt = torch.optim.AdamW(adapter.trainable_parameters(), lr=case.lr)
    batch = _inputs(case, model)
    model.train()
    losses = []
    for _ in range(case.steps):
        loss = model(**batch, labels=batch["input_ids"]).loss
        value = float(loss.detach())
        if not torch.isfinite(loss.detach()):
            raise _fail(case, check, f"training loss is {value}")
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(value)
    model.eval()
    return losses


def _attach_and_train(case: MethodCase, check: str) -> tuple[torch.nn.Module, TrainableAdapter]:
    model = case.model_factory()
    torch.manual_seed(case.seed)
    adapter = case.method.attach(model, case.config)
    _train(case, model, adapter, check)
    return model, adapter


def _trained(case: MethodCase) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(adapter_state, logits with the adapter attached), computed once per case."""
    if "trained" not in case._cache:
        model, adapter = _attach_and_train(case, "train")
        case._cache["trained"] = (adapter.adapter_state(), _logits(model, _inputs(case, model)))
        adapter.detach()
    return case._cache["trained"]  # type: ignore[no-any-return]


def _second_adapter(case: MethodCase) -> dict[str, torch.Tensor]:
    """A different valid adapter: the trained one, deterministically perturbed."""
    state, _ = _trained(case)
    gen = torch.Generator().manual_seed(99)
    out = {}
    for k, v in state.items():
        if v.is_floating_point():
            noise = torch.randn(v.shape, generator=gen, dtype=torch.float32).to(v.dtype)
            out[k] = v + 0.05 * noise
        else:
            out[k] = v.clone()
    return out


def _wrong_shape(t: torch.Tensor) -> torch.Tensor:
    shape = (*t.shape[:-1], t.shape[-1] + 1) if t.dim() else (2,)
    return torch.zeros(shape, dtype=t.dtype)


def _base_snapshot(model: torch.nn.Module) -> dict[str, Any]:
    return {
        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "params": {n: id(p) for n, p in model.named_parameters()},
        "modules": [(n, type(m).__name__) for n, m in model.named_modules()],
        "hooks": {
            n: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for n, m in model.named_modules()
        },
    }


def _param_values(model: torch.nn.Module) -> dict[int, tuple[torch.nn.Parameter, torch.Tensor]]:
    return {id(p): (p, p.detach().cpu().clone()) for p in model.parameters()}


def _assert_params_unchanged(case: MethodCase, check: str, saved: dict[int, tuple[torch.nn.Parameter, torch.Tensor]], when: str) -> None:
    for p, value in saved.values():
        if p.shape != value.shape or not torch.equal(p.detach().cpu(), value):
            raise _fail(case, check, f"a base parameter of shape {tuple(value.shape)} changed {when}")


def _assert_equal(case: MethodCase, check: str, a: torch.Tensor, b: torch.Tensor, atol: float, what: str) -> None:
    if a.shape != b.shape:
        raise _fail(case, check, f"{what}: shapes {tuple(a.shape)} vs {tuple(b.shape)}")
    if atol == 0.0:
        if not torch.equal(a, b):
            raise _fail(case, check, f"{what}: not bit-identical (max abs diff {float((a - b).abs().max()):.3g})")
    elif not torch.allclose(a, b, atol=atol, rtol=0.0):
        raise _fail(case, check, f"{what}: max abs diff {float((a - b).abs().max()):.3g} > {atol}")


def _expect_incompatible(case: MethodCase, check: str, what: str, fn: Callable[[], object]) -> None:
    try:
        fn()
    except IncompatibleAdapterError:
        return
    except Exception as exc:
        raise _fail(case, check, f"{what} raised {type(exc).__name__}: {exc} (expected IncompatibleAdapterError)") from exc
    raise _fail(case, check, f"{what} was accepted (expected IncompatibleAdapterError)")


# --- checks ------------------------------------------------------------------------------------------
def check_protocol(case: MethodCase) -> None:
    c, m = "protocol", case.method
    if not isinstance(m, Method):
        raise _fail(case, c, f"{m!r} does not implement adapterhub.protocols.Method")
    if not isinstance(m.name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", m.name):
        raise _fail(case, c, f"name {m.name!r} must be lower-case letters, digits, '.', '_' or '-'")
    if m.kind not in METHOD_KINDS:
        raise _fail(case, c, f"kind {m.kind!r} is not one of {', '.join(METHOD_KINDS)}")
    caps = m.capabilities
    if not isinstance(caps, Capabilities) or not all(isinstance(getattr(caps, a), bool) for a in ("hot_swap", "mixed_batch", "merge")):
        raise _fail(case, c, "capabilities must be an adapterhub.protocols.Capabilities of bools")
    if caps.mixed_batch and not caps.hot_swap:
        raise _fail(case, c, "mixed_batch=True requires hot_swap=True")
    if not isinstance(m.description, str) or not m.description:
        raise _fail(case, c, "description must be a non-empty string")
    if not (isinstance(m.config_cls, type) and issubclass(m.config_cls, MethodConfig)):
        raise _fail(case, c, "config_cls must subclass adapterhub.protocols.MethodConfig")
    cfg_conf = m.config_cls.model_config
    if cfg_conf.get("frozen") is not True or cfg_conf.get("extra") != "forbid":
        raise _fail(case, c, "config_cls must be frozen with extra='forbid'")
    if not isinstance(case.config, m.config_cls):
        raise _fail(case, c, f"the config is a {type(case.config).__name__}, not a {m.config_cls.__name__}")
    again = m.config_cls.model_validate(case.config.model_dump(mode="json"))
    if again != case.config:
        raise _fail(case, c, "the config does not survive a JSON round trip (model_dump -> model_validate)")


def check_attach_trainable(case: MethodCase) -> None:
    c = "attach_trainable"
    model = case.model_factory()
    base = {id(p) for p in model.parameters()}
    adapter = case.method.attach(model, case.config)
    if not isinstance(adapter, TrainableAdapter):
        raise _fail(case, c, "attach() must return a TrainableAdapter")
    trainable = adapter.trainable_parameters()
    ids = [id(p) for p in trainable]
    if not trainable:
        raise _fail(case, c, "trainable_parameters() is empty")
    if len(set(ids)) != len(ids):
        raise _fail(case, c, "trainable_parameters() lists a parameter twice")
    if not all(p.requires_grad for p in trainable):
        raise _fail(case, c, "a trainable parameter does not require grad")
    stray = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in set(ids)]
    if stray:
        raise _fail(case, c, f"{stray[0]!r} requires grad but is not in trainable_parameters()")
    in_base = [i for i in ids if i in base]
    kind = case.method.kind
    if kind in ("reparameterization", "additive") and in_base:
        raise _fail(case, c, f"{len(in_base)} base parameter(s) are trainable; a {kind} method must freeze the base")
    if kind == "selective" and len(in_base) != len(ids):
        raise _fail(case, c, "a selective method trains base parameters only")
    if kind == "full" and set(ids) != base:
        raise _fail(case, c, "full fine-tuning must train every base parameter")
    adapter.detach()


def check_training_changes_outputs(case: MethodCase) -> None:
    c = "training_changes_outputs"
    model = case.model_factory()
    torch.manual_seed(case.seed)
    adapter = case.method.attach(model, case.config)
    before = _logits(model, _inputs(case, model))
    _train(case, model, adapter, c)
    after = _logits(model, _inputs(case, model))
    if torch.equal(before, after):
        raise _fail(case, c, f"{case.steps} optimizer steps did not change the logits")
    if not bool(torch.isfinite(after).all()):
        raise _fail(case, c, "logits are not finite after training")
    adapter.detach()


def check_save_load_round_trip(case: MethodCase) -> None:
    c = "save_load_round_trip"
    model, adapter = _attach_and_train(case, c)
    trained = _logits(model, _inputs(case, model))
    state = adapter.adapter_state()
    if not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise _fail(case, c, "adapter_state() must be a non-empty dict of str -> Tensor")
    live = {p.data_ptr() for p in model.parameters()} | {p.data_ptr() for p in adapter.trainable_parameters()}
    for k, v in state.items():
        if v.device.type != "cpu" or not v.is_contiguous() or v.requires_grad:
            raise _fail(case, c, f"adapter_state()[{k!r}] must be a detached, contiguous CPU tensor")
        if v.numel() and v.data_ptr() in live:
            raise _fail(case, c, f"adapter_state()[{k!r}] aliases a live parameter; return a clone")
    adapter.detach()
    with tempfile.TemporaryDirectory(prefix="adapterhub-conformance-") as tmp:
        path = Path(tmp) / "adapter.safetensors"
        save_safetensors(state, path)
        loaded = load_safetensors(path)
    if loaded.keys() != state.keys() or not all(torch.equal(loaded[k], state[k]) for k in state):
        raise _fail(case, c, "tensors changed through save_safetensors/load_safetensors")
    config = case.method.config_cls.model_validate(case.config.model_dump(mode="json"))
    fresh = case.model_factory()
    snap = _base_snapshot(fresh)
    case.method.validate(fresh, config, loaded)
    again = case.method.load(fresh, config, loaded)
    _assert_equal(case, c, _logits(fresh, _inputs(case, fresh)), trained, case.roundtrip_atol, "logits after load vs. after training")
    again.detach()
    _compare_snapshot(case, c, fresh, snap, "after detaching a loaded adapter")


def _compare_snapshot(case: MethodCase, check: str, model: torch.nn.Module, snap: dict[str, Any], when: str) -> None:
    now = _base_snapshot(model)
    if now["modules"] != snap["modules"]:
        raise _fail(case, check, f"the module tree differs {when}")
    if now["hooks"] != snap["hooks"]:
        bad = next(n for n in snap["hooks"] if now["hooks"].get(n) != snap["hooks"][n])
        raise _fail(case, check, f"hooks left on module {bad!r} {when}")
    if now["params"] != snap["params"]:
        raise _fail(case, check, f"parameters were replaced (not the same objects) {when}")
    if now["state"].keys() != snap["state"].keys():
        raise _fail(case, check, f"state_dict names differ {when}")
    for k, v in snap["state"].items():
        w = now["state"][k]
        if w.dtype != v.dtype or not torch.equal(w, v):
            raise _fail(case, check, f"base tensor {k!r} is not bit-identical {when}")


def check_detach_restores_base(case: MethodCase) -> None:
    c = "detach_restores_base"
    model = case.model_factory()
    snap = _base_snapshot(model)
    base = _logits(model, _inputs(case, model))
    torch.manual_seed(case.seed)
    adapter = case.method.attach(model, case.config)
    _train(case, model, adapter, c)
    adapter.detach()
    _compare_snapshot(case, c, model, snap, "after detach")
    _assert_equal(case, c, _logits(model, _inputs(case, model)), base, 0.0, "base logits after detach")


def check_deterministic(case: MethodCase) -> None:
    c = "deterministic"
    first, _ = _trained(case)
    model, adapter = _attach_and_train(case, c)
    second = adapter.adapter_state()
    adapter.detach()
    if first.keys() != second.keys():
        raise _fail(case, c, "two seeded runs stored different tensor names")
    for k in first:
        if not torch.equal(first[k], second[k]):
            raise _fail(case, c, f"two seeded runs differ in {k!r}")


def check_validate_rejects(case: MethodCase) -> None:
    c = "validate_rejects"
    state, _ = _trained(case)
    keys = list(state)
    bad_sets = {
        f"a state missing {keys[0]!r}": {k: v for k, v in state.items() if k != keys[0]},
        "a state with an unexpected key": {**state, "conformance.unexpected.weight": state[keys[0]].clone()},
        f"a state with {keys[-1]!r} wrong-shaped": {**state, keys[-1]: _wrong_shape(state[keys[-1]])},
    }
    model = case.model_factory()
    snap = _base_snapshot(model)
    for what, bad in bad_sets.items():
        _expect_incompatible(case, c, f"validate() of {what}", partial(case.method.validate, model, case.config, bad))
        _expect_incompatible(case, c, f"load() of {what}", partial(case.method.load, model, case.config, bad))
        _compare_snapshot(case, c, model, snap, f"after a failed load() of {what}")


# --- runtime checks ------------------------------------------------------------------------------------
def _runtime(case: MethodCase, check: str) -> tuple[torch.nn.Module, MethodRuntime]:
    if not case.method.capabilities.hot_swap:
        raise NotApplicable("capabilities.hot_swap is False")
    model = case.model_factory()
    rt = case.method.runtime(model)
    if not isinstance(rt, MethodRuntime):
        raise _fail(case, check, "runtime() must return a MethodRuntime")
    return model, rt


def _routed(model: torch.nn.Module, rt: MethodRuntime, rows: list[str | None], inputs: dict[str, Any]) -> torch.Tensor:
    with rt.route(rows, dict(inputs)) as kwargs:
        return _logits(model, kwargs)


def _apply(case: MethodCase, check: str, rt: MethodRuntime, adapter_id: str, tensors: Mapping[str, torch.Tensor]) -> SwapPlan:
    plan = rt.plan(adapter_id, case.config, tensors)
    if not isinstance(plan, SwapPlan) or plan.adapter_id != adapter_id or plan.method != case.method.name:
        raise _fail(case, check, "plan() must return a SwapPlan with this adapter_id and method name")
    if not isinstance(plan.nbytes, int) or plan.nbytes <= 0:
        raise _fail(case, check, f"plan().nbytes must be a positive int, got {plan.nbytes!r}")
    rt.apply(plan)
    if adapter_id not in rt.resident():
        raise _fail(case, check, f"{adapter_id!r} is not resident after apply()")
    return plan


def check_runtime(case: MethodCase) -> None:
    c = "runtime"
    if not case.method.capabilities.hot_swap:
        try:
            case.method.runtime(case.model_factory())
        except NotImplementedError:
            return
        raise _fail(case, c, "hot_swap is False, so runtime() must raise NotImplementedError")
    state, reference = _trained(case)
    model, rt = _runtime(case, c)
    inputs = _inputs(case, model)
    base = _logits(model, inputs)
    params = _param_values(model)
    plan = rt.plan("conf-a", case.config, state)
    if not isinstance(plan, SwapPlan) or plan.adapter_id != "conf-a" or plan.method != case.method.name:
        raise _fail(case, c, "plan() must return a SwapPlan with this adapter_id and method name")
    _assert_params_unchanged(case, c, params, "during plan()")
    _assert_equal(case, c, _logits(model, inputs), base, 0.0, "base logits after plan()")
    if "conf-a" in rt.resident():
        raise _fail(case, c, "plan() made the adapter resident; only apply() may")
    rt.apply(plan)
    if "conf-a" not in rt.resident():
        raise _fail(case, c, "'conf-a' is not resident after apply()")
    _assert_equal(case, c, _logits(model, inputs), base, 0.0, "base logits outside a route after apply()")
    rows: list[str | None] = ["conf-a"] * case.batch
    _assert_equal(case, c, _routed(model, rt, rows, inputs), reference, case.route_atol, "routed logits vs. attached adapter")
    _assert_equal(case, c, _logits(model, inputs), base, 0.0, "base logits after leaving the route")
    _assert_equal(case, c, _routed(model, rt, [None] * case.batch, inputs), base, case.route_atol, "logits of rows routed to no adapter")
    _assert_params_unchanged(case, c, params, "after routing")


def check_runtime_failed_plan(case: MethodCase) -> None:
    c = "runtime_failed_plan"
    model, rt = _runtime(case, c)
    state, _ = _trained(case)
    inputs = _inputs(case, model)
    base = _logits(model, inputs)
    params = _param_values(model)
    _apply(case, c, rt, "conf-a", state)
    _assert_params_unchanged(case, c, params, "by plan() + apply()")
    rows: list[str | None] = ["conf-a"] * case.batch
    routed = _routed(model, rt, rows, inputs)
    resident = list(rt.resident())
    last = list(state)[-1]
    bad = {**state, last: _wrong_shape(state[last])}
    for adapter_id in ("conf-bad", "conf-a"):  # a new id, and a replacement of the resident one
        _expect_incompatible(case, c, f"plan({adapter_id!r}) with {last!r} wrong-shaped", partial(rt.plan, adapter_id, case.config, bad))
        if list(rt.resident()) != resident:
            raise _fail(case, c, "a failed plan() changed the resident adapters")
        _assert_params_unchanged(case, c, params, "by a failed plan()")
        _assert_equal(case, c, _routed(model, rt, rows, inputs), routed, 0.0, "routed logits after a failed plan()")
        _assert_equal(case, c, _logits(model, inputs), base, 0.0, "base logits after a failed plan()")


def check_runtime_remove(case: MethodCase) -> None:
    c = "runtime_remove"
    model, rt = _runtime(case, c)
    state, _ = _trained(case)
    inputs = _inputs(case, model)
    base = _logits(model, inputs)
    params = _param_values(model)
    _apply(case, c, rt, "conf-a", state)
    _apply(case, c, rt, "conf-b", _second_adapter(case))
    rows_b: list[str | None] = ["conf-b"] * case.batch
    routed_b = _routed(model, rt, rows_b, inputs)
    if torch.equal(routed_b, _routed(model, rt, ["conf-a"] * case.batch, inputs)):
        raise _fail(case, c, "two different adapters gave identical routed logits")
    rt.remove("conf-a")
    if "conf-a" in rt.resident() or "conf-b" not in rt.resident():
        raise _fail(case, c, f"after remove('conf-a') resident() is {list(rt.resident())}")
    _assert_equal(case, c, _routed(model, rt, rows_b, inputs), routed_b, 0.0, "logits of the remaining adapter after remove()")
    try:
        _routed(model, rt, ["conf-a"] * case.batch, inputs)
    except Exception:  # noqa: S110 - any clear error is fine; silently serving is not
        pass
    else:
        raise _fail(case, c, "routing a removed adapter did not raise")
    rt.remove("conf-b")
    if list(rt.resident()):
        raise _fail(case, c, f"resident() is {list(rt.resident())} after removing every adapter")
    _assert_equal(case, c, _logits(model, inputs), base, 0.0, "base logits after removing every adapter")
    _assert_params_unchanged(case, c, params, "after remove()")


def check_mixed_batch(case: MethodCase) -> None:
    c = "mixed_batch"
    if not case.method.capabilities.mixed_batch:
        raise NotApplicable("capabilities.mixed_batch is False (the host groups rows per adapter)")
    model, rt = _runtime(case, c)
    state, _ = _trained(case)
    _apply(case, c, rt, "conf-a", state)
    _apply(case, c, rt, "conf-b", _second_adapter(case))
    inputs = _inputs(case, model)
    pattern: list[str | None] = ["conf-a", None, "conf-b"]
    rows = [pattern[i % 3] for i in range(case.batch)]
    mixed = _routed(model, rt, rows, inputs)
    for i, row in enumerate(rows):
        alone = _routed(model, rt, [row] * case.batch, inputs)[i]
        _assert_equal(case, c, mixed[i], alone, case.route_atol, f"row {i} ({row}) in a mixed batch vs. alone")


def _cache_kwarg(model: torch.nn.Module) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def check_route_decode(case: MethodCase) -> None:
    c = "route_decode"
    model, rt = _runtime(case, c)
    state, _ = _trained(case)
    _apply(case, c, rt, "conf-a", state)
    inputs = _inputs(case, model)
    ids, batch = inputs["input_ids"], case.batch
    rows: list[str | None] = ["conf-a"] * batch
    whole = _routed(model, rt, rows, inputs)
    split = max(1, ids.shape[1] - 3)
    first = {"input_ids": ids[:, :split], "attention_mask": inputs["attention_mask"][:, :split]}
    with torch.no_grad():
        with rt.route(rows, dict(first)) as kwargs:
            out = model(**kwargs, use_cache=True)
            mask = kwargs["attention_mask"]
            pos = kwargs.get("position_ids")
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        if cache is None:
            raise _fail(case, c, "the first forward returned no cache")
        last = pos[:, -1:] if pos is not None else (mask.long().cumsum(-1) - 1)[:, -1:]
        logits = [out.logits[:, -1:].float().cpu()]
        for t in range(split, ids.shape[1]):  # one token per forward, as a decode step
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
            last = last + 1
            step = {"input_ids": ids[:, t : t + 1], "attention_mask": mask, "position_ids": last, _cache_kwarg(model): cache}
            with rt.route(rows, step) as kwargs:
                out = model(**kwargs, use_cache=True)
            cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            logits.append(out.logits[:, -1:].float().cpu())
    continued = torch.cat(logits, dim=1)
    _assert_equal(case, c, continued, whole[:, split - 1 :], case.route_atol, "logits of forwards continuing a cached row vs. one forward")


CHECKS: dict[str, Callable[[MethodCase], None]] = {
    "protocol": check_protocol,
    "attach_trainable": check_attach_trainable,
    "training_changes_outputs": check_training_changes_outputs,
    "save_load_round_trip": check_save_load_round_trip,
    "detach_restores_base": check_detach_restores_base,
    "deterministic": check_deterministic,
    "validate_rejects": check_validate_rejects,
    "runtime": check_runtime,
    "runtime_failed_plan": check_runtime_failed_plan,
    "runtime_remove": check_runtime_remove,
    "mixed_batch": check_mixed_batch,
    "route_decode": check_route_decode,
    "route_tokens": lambda case: _packed_checks().check_route_tokens(case),
}


def _packed_checks() -> Any:
    # A module of its own (it imports the helpers above): imported when first used.
    from adapterhub.testing import packed_checks

    return packed_checks


# --- entry points ----------------------------------------------------------------------------------------
@dataclass
class ConformanceReport:
    """Which checks passed and which did not apply (with why)."""

    method: str
    passed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def check_method(
    method: Method,
    config: MethodConfig,
    model_factory: ModelFactory,
    *,
    steps: int = 3,
    only: Iterable[str] | None = None,
    **options: Any,
) -> ConformanceReport:
    """Run every check (or ``only`` those); raise :class:`ConformanceError` on the first
    failure. ``options`` are :class:`MethodCase` fields (``seed``, ``lr``, ``route_atol``...)."""
    case = MethodCase(method, config, model_factory, steps=steps, **options)
    report = ConformanceReport(case.name)
    for name in only or CHECKS:
        if name not in CHECKS:
            raise KeyError(f"unknown conformance check {name!r}; checks: {', '.join(CHECKS)}")
        try:
            CHECKS[name](case)
        except NotApplicable as why:
            report.skipped[name] = str(why)
        else:
            report.passed.append(name)
    return report


def applies(case: MethodCase, check: str) -> bool:
    """Whether ``check`` applies to the case's method (runtime checks need hot_swap,
    the mixed-batch check also needs mixed_batch)."""
    caps = case.method.capabilities
    if check in ("runtime", "runtime_failed_plan", "runtime_remove", "route_decode"):
        return bool(caps.hot_swap)
    if check == "mixed_batch":
        return bool(caps.hot_swap and caps.mixed_batch)
    if check == "route_tokens":
        return _packed_checks().is_packed(case)  # type: ignore[no-any-return]
    return True


def conformance_params(cases: Iterable[MethodCase]) -> list[Any]:
    """``pytest.param(case, check, id="<method>-<check>")`` for every case and every check
    that applies to it: a check that cannot apply is not generated, rather than reported
    as a skipped test that would read as coverage."""
    import pytest

    return [
        pytest.param(case, name, id=f"{case.name}-{name}")
        for case in cases
        for name in CHECKS
        if applies(case, name)
    ]


def run_check(case: MethodCase, check: str) -> None:
    """Run one check inside a pytest test; a check that does not apply is a pytest skip."""
    import pytest

    try:
        CHECKS[check](case)
    except NotApplicable as why:
        pytest.skip(f"{case.name}: {check} does not apply: {why}")


__all__ = [
    "CHECKS",
    "ConformanceError",
    "ConformanceReport",
    "MethodCase",
    "ModelFactory",
    "NotApplicable",
    "applies",
    "check_attach_trainable",
    "check_deterministic",
    "check_detach_restores_base",
    "check_method",
    "check_mixed_batch",
    "check_protocol",
    "check_runtime",
    "check_runtime_failed_plan",
    "check_route_decode",
    "check_runtime_remove",
    "check_save_load_round_trip",
    "check_training_changes_outputs",
    "check_validate_rejects",
    "conformance_params",
    "run_check",
]
