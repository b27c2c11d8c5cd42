"""The ``full`` method: every weight trains. The baseline PEFT methods are measured against.

The stored "adapter" is the whole state dict (parameters and persistent buffers, each
tied tensor once, under the names ``save_pretrained`` uses), in the base dtype, so the
artifact has the same manifest, sha256 checks and provenance as any adapter;
:func:`adapterhub.plugins.full.export.export_model_dir` turns it into an ordinary
transformers model directory for ``from_pretrained``.

``attach`` keeps an exact CPU copy of every base tensor so ``detach`` gives the base back
bit for bit (what the conformance suite checks). That copy costs one base's worth of host
memory; a one-shot training run that discards the model afterwards can set
``restorable=False`` to skip it (``detach`` then refuses instead of restoring).

Not hot-swappable: ``runtime`` raises :class:`NotImplementedError`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from adapterhub.plugins.full import TRAINING_DEFAULTS
from adapterhub.plugins.full.config import FullConfig
from adapterhub.plugins.layer_select.tensors import BaseTensorAdapter, base_tensors, check_tensors

from adapterhub.errors import IncompatibleAdapterError
from adapterhub.protocols.method import (
    Capabilities,
    MethodConfig,
    MethodKind,
    MethodRuntime,
    TrainingDefaults,
)

NAME = "full"


class FullAdapter(BaseTensorAdapter):
    """Every parameter trains; ``adapter_state`` is the complete state dict."""

    def __init__(self, model: torch.nn.Module, *, restorable: bool) -> None:
        names = list(base_tensors(model)[0])
        self.restorable = restorable
        super().__init__(model, names, buffers=True, keep_originals=restorable)

    def detach(self) -> None:
        if self.attached and not self.restorable:
            raise IncompatibleAdapterError(
                "full: attached with restorable=False, so the original base weights were not kept"
            )
        super().detach()


def _as_config(config: MethodConfig) -> FullConfig:
    if isinstance(config, FullConfig):
        return config
    raise IncompatibleAdapterError(f"{NAME}: expected a FullConfig, got {type(config).__name__}")


class FullMethod:
    """Plugin object registered under ``full``."""

    name = NAME
    kind: MethodKind = "full"
    description = "full fine-tuning: every weight trains (baseline; exported as a model directory)"
    config_cls = FullConfig
    capabilities = Capabilities(hot_swap=False, mixed_batch=False, merge=False)
    training_defaults = TrainingDefaults(**TRAINING_DEFAULTS)

    def attach(self, model: torch.nn.Module, config: MethodConfig) -> FullAdapter:
        return FullAdapter(model, restorable=_as_config(config).restorable)

    def check(
        self, model: torch.nn.Module, config: MethodConfig, tensors: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """``validate`` that also returns the tensors keyed by canonical names."""
        _as_config(config)
        expected = list(base_tensors(model, buffers=True)[0])
        return check_tensors(model, expected, tensors, what=NAME, buffers=True, not_selected="not part of a full state")

    def validate(self, model: torch.nn.Module, config: MethodConfig, tensors: Mapping[str, torch.Tensor]) -> None:
        self.check(model, config, tensors)

    def load(self, model: torch.nn.Module, config: MethodConfig, tensors: Mapping[str, torch.Tensor]) -> FullAdapter:
        values = self.check(model, config, tensors)
        adapter = self.attach(model, config)
        adapter.load_values(values)
        return adapter

    def runtime(self, model: torch.nn.Module) -> MethodRuntime:
        raise NotImplementedError(
            "full fine-tunes replace the whole model and are not hot-swappable; export one with "
            "adapterhub.plugins.full.export_model_dir and load it as its own base model"
        )


METHOD = FullMethod()

__all__ = ["METHOD", "NAME", "FullAdapter", "FullConfig", "FullMethod"]
