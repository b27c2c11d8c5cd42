"""The ``lora`` method: training-side attach/load/detach and merge/unmerge."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from adapterhub.plugins.lora import TRAINING_DEFAULTS
from adapterhub.plugins.lora.config import LoraConfig
from adapterhub.plugins.lora.layers import LoraLinear, MultiLoraLinear
from adapterhub.plugins.lora.runtime import LoraRuntime
from adapterhub.plugins.lora.validation import coerce_config, targets_for, validate_against
from torch import nn

from adapterhub.errors import ConfigError
from adapterhub.protocols.method import Capabilities, MethodConfig, MethodKind, TrainingDefaults


def _parent_of(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    parent_path, _, attr = path.rpartition(".")
    return (model.get_submodule(parent_path) if parent_path else model), attr


def _has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, (LoraLinear, MultiLoraLinear)) for m in model.modules())


class LoraAdapter:
    """LoRA layers attached to a frozen base (implements ``TrainableAdapter``)."""

    def __init__(self, model: nn.Module, config: LoraConfig, layers: dict[str, LoraLinear], grad_flags: list[tuple[nn.Parameter, bool]]) -> None:
        self.model = model
        self.config = config
        self.layers = layers
        self._grad_flags = grad_flags
        self._attached = True

    @property
    def targets(self) -> list[str]:
        """Module paths of the adapted linears, in model order."""
        return list(self.layers)

    def trainable_parameters(self) -> list[nn.Parameter]:
        out: list[nn.Parameter] = []
        for layer in self.layers.values():
            out += [layer.lora_A, layer.lora_B]
        return out

    def adapter_state(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for path, layer in self.layers.items():
            # clone(): the stored tensors must not alias parameters still being trained.
            state[f"{path}.lora_A"] = layer.lora_A.detach().to("cpu", copy=True).contiguous()
            state[f"{path}.lora_B"] = layer.lora_B.detach().to("cpu", copy=True).contiguous()
        return state

    def merge(self) -> None:
        """Fold every update into its base weight (exact copies kept for ``unmerge``)."""
        self._check_attached()
        for layer in self.layers.values():
            layer.merge()

    def unmerge(self) -> None:
        """Restore every merged base weight bit for bit."""
        for layer in self.layers.values():
            layer.unmerge()

    @property
    def merged(self) -> bool:
        return any(layer.merged for layer in self.layers.values())

    def detach(self) -> None:
        """Put the original linears back and restore every ``requires_grad`` flag."""
        if not self._attached:
            return
        self.unmerge()
        for path, layer in self.layers.items():
            parent, attr = _parent_of(self.model, path)
            setattr(parent, attr, layer.base_linear)
        for p, flag in self._grad_flags:
            p.requires_grad_(flag)
        self._attached = False

    def _check_attached(self) -> None:
        if not self._attached:
            raise RuntimeError("this LoRA adapter was detached")


class LoraMethod:
    """Low-rank adaptation (Hu et al. 2021): ``W x + (alpha/r) B A x`` on chosen linears."""

    name = "lora"
    kind: MethodKind = "reparameterization"
    description = "LoRA: trainable low-rank updates B·A on selected linear layers; mergeable, hot-swappable, mixed batches"
    config_cls: type[MethodConfig] = LoraConfig
    capabilities = Capabilities(hot_swap=True, mixed_batch=True, merge=True)
    training_defaults = TrainingDefaults(**TRAINING_DEFAULTS)

    def attach(self, model: nn.Module, config: MethodConfig) -> LoraAdapter:
        return self._attach(model, coerce_config(config), init=True)

    def validate(self, model: nn.Module, config: MethodConfig, tensors: Mapping[str, torch.Tensor]) -> None:
        validate_against(model, config, tensors)

    def load(self, model: nn.Module, config: MethodConfig, tensors: Mapping[str, torch.Tensor]) -> LoraAdapter:
        cfg, _ = validate_against(model, config, tensors)
        adapter = self._attach(model, cfg, init=False)
        with torch.no_grad():
            for path, layer in adapter.layers.items():
                layer.lora_A.copy_(tensors[f"{path}.lora_A"])
                layer.lora_B.copy_(tensors[f"{path}.lora_B"])
        return adapter

    def runtime(self, model: nn.Module) -> LoraRuntime:
        return LoraRuntime(model)

    def _attach(self, model: nn.Module, config: LoraConfig, init: bool) -> LoraAdapter:
        if _has_lora(model):
            raise ConfigError("this model already carries LoRA layers; detach them (or close the runtime) first")
        targets = targets_for(model, config)
        grad_flags = [(p, p.requires_grad) for p in model.parameters()]
        for p, _ in grad_flags:
            p.requires_grad_(False)
        layers: dict[str, LoraLinear] = {}
        # Module order is fixed, so initialisation is deterministic under a seed.
        for info in targets:
            parent, attr = _parent_of(model, info.path)
            base = getattr(parent, attr)
            assert isinstance(base, nn.Linear)
            layer = LoraLinear(base, config.r, config.scaling, config.dropout, config.init if init else None)
            layer.train(base.training)
            setattr(parent, attr, layer)
            layers[info.path] = layer
        return LoraAdapter(model, config, layers, grad_flags)
