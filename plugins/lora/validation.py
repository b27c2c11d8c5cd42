"""Checks an adapter's tensors against a config and a base, before anything changes.

Shared by the training side (``validate``/``load``) and the serving runtime (``plan``),
so both refuse exactly the same adapters with the same one-line messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from adapterhub.plugins.lora.config import (
    LinearInfo,
    LoraConfig,
    architecture_of,
    expected_shapes,
    output_embedding_paths,
    resolve_targets,
)
from adapterhub.plugins.lora.layers import LoraLinear, MultiLoraLinear

from adapterhub.errors import ConfigError, IncompatibleAdapterError
from adapterhub.safeio import all_finite


def linear_infos(model: torch.nn.Module) -> list[LinearInfo]:
    """Every linear layer of ``model`` in module order, seeing through our LoRA layers.

    A model that currently carries LoRA layers (attached for training, or wrapped by a
    serving runtime) still reports the base linears they replaced, so validation gives
    the same answer before and after wrapping.
    """
    out: list[LinearInfo] = []
    for name, mod in model.named_modules():
        if isinstance(mod, (torch.nn.Linear, LoraLinear, MultiLoraLinear)):
            out.append(LinearInfo(name, int(mod.in_features), int(mod.out_features)))
    return out


def coerce_config(config: object) -> LoraConfig:
    """A ``LoraConfig`` from a config object or a plain mapping (ConfigError otherwise)."""
    if isinstance(config, LoraConfig):
        return config
    if isinstance(config, Mapping):
        try:
            return LoraConfig.model_validate(dict(config))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            first = str(exc).splitlines()
            raise ConfigError(f"invalid lora config: {' '.join(first[:3])}") from None
    raise ConfigError(f"lora needs a LoraConfig, got {type(config).__name__}")


def targets_for(model: torch.nn.Module, config: LoraConfig) -> list[LinearInfo]:
    """The linear layers ``config`` adapts on ``model`` (ConfigError if it selects none)."""
    return resolve_targets(config, linear_infos(model), architecture_of(model), output_embedding_paths(model))


def check_tensors(config: LoraConfig, targets: Sequence[LinearInfo], tensors: Mapping[str, object]) -> None:
    """Raise IncompatibleAdapterError naming the first bad key; return if all is well.

    Order: every expected key in model order (missing, not a tensor, shape, dtype,
    non-finite values), then keys the config does not produce.
    """
    expected = expected_shapes(config, targets)
    for key, shape in expected.items():
        if key not in tensors:
            raise IncompatibleAdapterError(f"LoRA adapter is missing tensor {key!r} (r={config.r})")
        t = tensors[key]
        if not isinstance(t, torch.Tensor):
            raise IncompatibleAdapterError(f"LoRA tensor {key!r} is a {type(t).__name__}, not a tensor")
        if tuple(t.shape) != shape:
            what = "(r, in_features)" if key.endswith(".lora_A") else "(out_features, r)"
            raise IncompatibleAdapterError(
                f"LoRA tensor {key!r} has shape {tuple(t.shape)}, expected {shape} {what} for r={config.r}"
            )
        if not t.is_floating_point():
            raise IncompatibleAdapterError(f"LoRA tensor {key!r} has dtype {t.dtype}, expected a floating dtype")
    # One pass over all of them (one reduction when they share a buffer, as loaded
    # adapters do); only a failure pays for finding which tensor it was.
    checked = [tensors[key] for key in expected]
    if not all_finite(t for t in checked if isinstance(t, torch.Tensor)):
        for key in expected:
            t = tensors[key]
            if isinstance(t, torch.Tensor) and not all_finite([t]):
                raise IncompatibleAdapterError(f"LoRA tensor {key!r} holds NaN or infinite values")
    for key in tensors:
        if key not in expected:
            raise IncompatibleAdapterError(
                f"LoRA adapter has unexpected tensor {key!r} (not a lora_A/lora_B of a target of this config on this base)"
            )


@dataclass(frozen=True)
class BaseLayout:
    """What target resolution needs to know about a base (computed once by a runtime)."""

    linears: tuple[LinearInfo, ...]
    architecture: str | None
    excluded: frozenset[str]
    # (target_modules, layers) -> resolved targets: matching every pattern against every
    # linear costs ~0.3 ms per load, and a host sees the same few configs again and again.
    resolved: dict[tuple[object, object], list[LinearInfo]] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def targets(self, config: LoraConfig) -> list[LinearInfo]:
        key = (config.target_modules, config.layers)
        hit = self.resolved.get(key)
        if hit is None:
            hit = resolve_targets(config, self.linears, self.architecture, self.excluded)
            if len(self.resolved) < 256:  # configs come from manifests: bound the cache
                self.resolved[key] = hit
        return list(hit)

    @classmethod
    def of(cls, model: torch.nn.Module) -> BaseLayout:
        return cls(tuple(linear_infos(model)), architecture_of(model), output_embedding_paths(model))


def validate_against(
    model: torch.nn.Module, config: object, tensors: Mapping[str, object], layout: BaseLayout | None = None
) -> tuple[LoraConfig, list[LinearInfo]]:
    """Full check of ``tensors`` for ``config`` on ``model``; returns the resolved targets.

    ``layout``: a cached :class:`BaseLayout` of ``model`` (saves walking the module tree).
    """
    cfg = coerce_config(config)
    layout = layout or BaseLayout.of(model)
    try:
        targets = layout.targets(cfg)
    except ConfigError as exc:
        raise IncompatibleAdapterError(str(exc)) from None
    check_tensors(cfg, targets, tensors)
    return cfg, targets
