"""The ``layer-selective`` method: train a chosen subset of the base's own parameters.

Selection is :class:`adapterhub.selector.SelectorConfig` (``layers``, ``modules``,
``kinds``), so ``--set layers=20-29``, ``--set kinds=bias`` or ``--set
modules=re:\\.mlp\\.`` work. With no selection at all it trains the norms (the smallest
selection that exists in every transformer).

The adapter file holds exactly the selected parameters under their own names, full
tensors, base dtype. ``attach`` keeps an exact CPU copy of them, so ``detach`` puts the
base back bit for bit into the same ``Parameter`` objects. Tied weights (SmolLM2's
``lm_head`` *is* ``embed_tokens``) are one tensor: selecting either name trains both
uses and the tensor is stored once as ``model.embed_tokens.weight``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from adapterhub.plugins.layer_select import TRAINING_DEFAULTS
from adapterhub.plugins.layer_select.config import LayerSelectiveConfig
from adapterhub.plugins.layer_select.tensors import BaseTensorAdapter, check_tensors

from adapterhub.errors import ConfigError, IncompatibleAdapterError
from adapterhub.protocols.method import (
    Capabilities,
    MethodConfig,
    MethodKind,
    MethodRuntime,
    TrainingDefaults,
)
from adapterhub.selector import parameter_aliases, select_parameters

log = logging.getLogger(__name__)
NAME = "layer-selective"


def _as_config(config: MethodConfig) -> LayerSelectiveConfig:
    if isinstance(config, LayerSelectiveConfig):
        return config
    raise IncompatibleAdapterError(f"{NAME}: expected a LayerSelectiveConfig, got {type(config).__name__}")


def selected_names(model: torch.nn.Module, config: MethodConfig) -> list[str]:
    """Canonical names the config selects on ``model`` (ConfigError if none / bad range)."""
    return select_parameters(model, _as_config(config))


class SelectiveAdapter(BaseTensorAdapter):
    """The attached training-side adapter (see :class:`BaseTensorAdapter`)."""


class LayerSelectiveMethod:
    """Plugin object registered under ``layer-selective``."""

    name = NAME
    kind: MethodKind = "selective"
    description = "train chosen base parameters only (layer range, module pattern, kind: bias, norm, ...)"
    config_cls = LayerSelectiveConfig
    capabilities = Capabilities(hot_swap=True, mixed_batch=False, merge=False)
    training_defaults = TrainingDefaults(**TRAINING_DEFAULTS)

    def attach(self, model: torch.nn.Module, config: MethodConfig) -> SelectiveAdapter:
        names = selected_names(model, config)
        aliases = parameter_aliases(model)
        tied = [n for n in names if len(aliases.get(n, [])) > 1]
        for n in tied:
            log.info("%s: %s is tied to %s; training it changes all of them", NAME, n, ", ".join(aliases[n][1:]))
        return SelectiveAdapter(model, names)

    def validate(self, model: torch.nn.Module, config: MethodConfig, tensors: Mapping[str, torch.Tensor]) -> None:
        self.check(model, config, tensors)

    def check(
        self, model: torch.nn.Module, config: MethodConfig, tensors: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """``validate`` that also returns the tensors keyed by canonical base names."""
        cfg = _as_config(config)
        try:
            names = select_parameters(model, cfg)
        except ConfigError as err:  # the config does not fit *this* base
            raise IncompatibleAdapterError(f"{NAME}: {err}") from None
        return check_tensors(
            model, names, tensors, what=NAME, not_selected=f"not selected by the config ({cfg.describe()})"
        )

    def load(self, model: torch.nn.Module, config: MethodConfig, tensors: Mapping[str, torch.Tensor]) -> SelectiveAdapter:
        values = self.check(model, config, tensors)
        adapter = self.attach(model, config)
        adapter.load_values(values)
        return adapter

    def runtime(self, model: torch.nn.Module) -> MethodRuntime:
        from adapterhub.plugins.layer_select.runtime import LayerSelectiveRuntime

        return LayerSelectiveRuntime(model, self)


METHOD = LayerSelectiveMethod()

__all__ = ["METHOD", "NAME", "LayerSelectiveConfig", "LayerSelectiveMethod", "SelectiveAdapter", "selected_names"]
