"""IA³ training side: config, target resolution, validation, attach/load/detach.

IA³ (Liu et al., 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper
than In-Context Learning") learns one vector per adapted linear and rescales
activations elementwise:

* attention keys and values: ``k = l_k ⊙ (W_k x)``, ``v = l_v ⊙ (W_v x)`` (the output of
  ``k_proj``/``v_proj`` is scaled);
* the MLP: ``down(l_ff ⊙ h)`` (the *input* of ``down_proj`` is scaled).

Vectors start at one, so a fresh adapter is exactly the base model. The stored tensors
are ``"<module path>.ia3_l"``, shape ``(features,)``, where ``features`` is the linear's
``out_features`` for output scaling and ``in_features`` for input scaling.

The base modules are never replaced: the scaling runs in forward hooks and the vectors
live outside the module tree, so ``detach`` (removing the hooks and restoring the
``requires_grad`` flags) leaves the base exactly as it was.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

import torch
from pydantic import ValidationError, model_validator
from torch import nn

from adapterhub.errors import ConfigError, IncompatibleAdapterError
from adapterhub.protocols.method import Capabilities, MethodConfig, MethodKind

KEY_SUFFIX = ".ia3_l"
HALF_DTYPES = (torch.float16, torch.bfloat16)
Position = Literal["input", "output"]

# Models carrying IA³ hooks (a training adapter or a runtime): a second attach would
# stack scalings silently, so it is refused.
_ATTACHED: weakref.WeakSet[nn.Module] = weakref.WeakSet()


class IA3Config(MethodConfig):
    """Which linears get a scaling vector, and which of them scale their input."""

    target_modules: tuple[str, ...] = ("k_proj", "v_proj", "down_proj")
    """Module names (last path components, or dotted suffixes) to adapt."""
    feedforward_modules: tuple[str, ...] = ("down_proj",)
    """Targets whose *input* is scaled (the MLP's down projection); others scale output."""

    @model_validator(mode="after")
    def _feedforward_subset(self) -> IA3Config:
        if not self.target_modules:
            raise ValueError("target_modules must name at least one module")
        extra = set(self.feedforward_modules) - set(self.target_modules)
        if extra:
            raise ValueError(f"feedforward_modules {sorted(extra)} are not in target_modules")
        return self


@dataclass(frozen=True)
class Target:
    path: str
    position: Position
    features: int

    @property
    def key(self) -> str:
        return self.path + KEY_SUFFIX


def _matches(path: str, pattern: str) -> bool:
    return path == pattern or path.endswith("." + pattern)


class LinearLike(Protocol):
    in_features: int
    out_features: int
    weight: torch.Tensor


def _is_linear_like(module: nn.Module) -> bool:
    # Another method's serving runtime (e.g. LoRA) may have replaced an nn.Linear with a
    # wrapper sharing its weight; IA³ still scales that wrapper's input/output.
    if isinstance(module, nn.Linear):
        return True
    weight = getattr(module, "weight", None)
    fin, fout = getattr(module, "in_features", None), getattr(module, "out_features", None)
    return isinstance(weight, torch.Tensor) and isinstance(fin, int) and isinstance(fout, int) and tuple(weight.shape) == (fout, fin)


def linear_at(model: nn.Module, path: str) -> LinearLike:
    module = model.get_submodule(path)
    if not _is_linear_like(module):
        raise IncompatibleAdapterError(f"ia3: {path!r} is not a linear layer in this model")
    return cast(LinearLike, module)


def coerce_config(config: MethodConfig | Mapping[str, Any]) -> IA3Config:
    if isinstance(config, IA3Config):
        return config
    data = config.model_dump() if isinstance(config, MethodConfig) else dict(config)
    try:
        return IA3Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "config"
        raise ConfigError(f"invalid ia3 config at {loc}: {first['msg']}") from None


def targets_for(model: nn.Module, config: IA3Config) -> list[Target]:
    """The adapted linears in model order (ConfigError when nothing matches)."""
    out: list[Target] = []
    for path, module in model.named_modules():
        if not any(_matches(path, p) for p in config.target_modules) or not _is_linear_like(module):
            continue
        linear = cast(LinearLike, module)
        ff = any(_matches(path, p) for p in config.feedforward_modules)
        out.append(Target(path, "input" if ff else "output", linear.in_features if ff else linear.out_features))
    if not out:
        raise ConfigError(f"ia3: no nn.Linear in this model matches target_modules {list(config.target_modules)}")
    return out


def validate_tensors(model: nn.Module, config: MethodConfig, tensors: Mapping[str, torch.Tensor]) -> tuple[IA3Config, list[Target]]:
    """Every check a load or swap needs; raises IncompatibleAdapterError, changes nothing."""
    cfg = coerce_config(config)
    targets = targets_for(model, cfg)
    expected = {t.key for t in targets}
    missing = sorted(expected - set(tensors))
    unexpected = sorted(set(tensors) - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s), e.g. {missing[0]!r}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[0]!r}")
        raise IncompatibleAdapterError("ia3 adapter does not fit this model: " + "; ".join(parts))
    for t in targets:
        v = tensors[t.key]
        if tuple(v.shape) != (t.features,):
            raise IncompatibleAdapterError(f"ia3 tensor {t.key!r} has shape {tuple(v.shape)}, this model needs ({t.features},)")
        if not v.dtype.is_floating_point:
            raise IncompatibleAdapterError(f"ia3 tensor {t.key!r} has dtype {v.dtype}, expected a floating-point dtype")
        if not bool(torch.isfinite(v).all()):
            raise IncompatibleAdapterError(f"ia3 tensor {t.key!r} contains NaN or Inf")
    return cfg, targets


def scale_output(vec: torch.Tensor) -> Any:
    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return output * vec.to(output.dtype)

    return hook


def scale_input(vec: torch.Tensor) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        return (x * vec.to(x.dtype), *args[1:])

    return hook


class IA3Adapter:
    """IA³ vectors hooked into a frozen base (implements ``TrainableAdapter``)."""

    def __init__(self, model: nn.Module, config: IA3Config, targets: list[Target]) -> None:
        self.model = model
        self.config = config
        self.targets = targets
        self._grad_flags = [(p, p.requires_grad) for p in model.parameters()]
        for p, _ in self._grad_flags:
            p.requires_grad_(False)
        self.vectors: dict[str, nn.Parameter] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        for t in targets:
            module = model.get_submodule(t.path)
            weight = linear_at(model, t.path).weight
            # fp32 vectors on a half-precision base: tiny updates would round away.
            dtype = torch.float32 if weight.dtype in HALF_DTYPES else weight.dtype
            vec = nn.Parameter(torch.ones(t.features, dtype=dtype, device=weight.device))
            self.vectors[t.path] = vec
            if t.position == "input":
                self._handles.append(module.register_forward_pre_hook(scale_input(vec)))
            else:
                self._handles.append(module.register_forward_hook(scale_output(vec)))
        _ATTACHED.add(model)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.vectors.values())

    def adapter_state(self) -> dict[str, torch.Tensor]:
        return {path + KEY_SUFFIX: v.detach().to("cpu", copy=True).contiguous() for path, v in self.vectors.items()}

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for p, flag in self._grad_flags:
            p.requires_grad_(flag)
        _ATTACHED.discard(self.model)


class IA3Method:
    """The ``ia3`` method (implements adapterhub's ``Method`` protocol)."""

    name = "ia3"
    kind: MethodKind = "additive"
    description = "IA³: learned scaling vectors on attention keys/values and the MLP down-projection input"
    config_cls: type[MethodConfig] = IA3Config
    capabilities = Capabilities(hot_swap=True, mixed_batch=True, merge=False)
    # A plain mapping (not adapterhub's TrainingDefaults): no new import, so the plugin also
    # loads on adapterhub versions that predate training defaults (which ignore it).
    training_defaults = {
        "lr": 1e-2,
        "note": "best of 2e-4/3e-3/1e-2/3e-2 in 30-step SmolLM2-135M runs on sentiment-rt; 2e-4 barely moves (adapterhub benchmarks/forgetting_mix.py --lr-sweep)",
    }

    def attach(self, model: nn.Module, config: MethodConfig) -> IA3Adapter:
        if model in _ATTACHED:
            raise ConfigError("this model already carries IA³ hooks; detach them (or close the runtime) first")
        cfg = coerce_config(config)
        return IA3Adapter(model, cfg, targets_for(model, cfg))

    def validate(self, model: nn.Module, config: MethodConfig, tensors: Mapping[str, torch.Tensor]) -> None:
        validate_tensors(model, config, tensors)

    def load(self, model: nn.Module, config: MethodConfig, tensors: Mapping[str, torch.Tensor]) -> IA3Adapter:
        cfg, _ = validate_tensors(model, config, tensors)
        adapter = self.attach(model, cfg)
        with torch.no_grad():
            for path, vec in adapter.vectors.items():
                vec.copy_(tensors[path + KEY_SUFFIX])
        return adapter

    def runtime(self, model: nn.Module) -> Any:
        from adapterhub_ia3.runtime import IA3Runtime

        return IA3Runtime(model)
