"""The ``prefix-tuning`` method: training side (attach/load/validate) and the plugin object.

The prefix reaches attention through a forward pre-hook on the model itself, so any
caller (the trainer, DDP, ``model.generate``) keeps calling
``model(input_ids=..., attention_mask=..., labels=...)`` and never learns about the
prefix. Before the first forward of a sequence (empty or missing cache) the hook:

* builds/fills a ``DynamicCache`` with the prefix key/values expanded to the batch,
* widens ``attention_mask`` with ``num_virtual_tokens`` ones on the left,
* sets ``position_ids`` so real tokens start at ``num_virtual_tokens`` (peft's
  convention: peft lets the model count the cached prefix, and offsets explicit
  position ids by ``num_virtual_tokens``), skipping left padding.

On later decoding steps with a cache the hook filled, it widens the caller's mask again
and offsets caller-given positions, because the caller's bookkeeping never included the
prefix.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from adapterhub.plugins.prefix_tuning import TRAINING_DEFAULTS
from adapterhub.plugins.prefix_tuning.config import PrefixTuningConfig
from adapterhub.plugins.prefix_tuning.encoder import PrefixEncoder, initialise
from adapterhub.plugins.prefix_tuning.layout import (
    KEY,
    VALUE,
    cache_kwarg,
    cache_length,
    fill_cache,
    geometry_of,
    prefilled_cache,
    token_positions,
    validate_prefix_tensors,
)
from pydantic import ValidationError
from torch import nn

from adapterhub.errors import ConfigError, IncompatibleAdapterError, TrainingError
from adapterhub.protocols.method import Capabilities, MethodConfig, TrainingDefaults

SUBMODULE = "adapterhub_prefix"
"""Attribute name of the encoder on the model: registering it as a submodule makes
``model.to()``, ``model.parameters()`` and DDP's gradient all-reduce cover the prefix."""

_TAG = "_adapterhub_prefix_tokens"
"""Set on caches the hook filled, to recognise later decoding steps."""


def coerce_config(config: MethodConfig | Mapping[str, Any]) -> PrefixTuningConfig:
    """Accept a PrefixTuningConfig or a plain mapping; anything else is a one-line error."""
    if isinstance(config, PrefixTuningConfig):
        return config
    if isinstance(config, Mapping):
        try:
            return PrefixTuningConfig.model_validate(dict(config))
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or "config"
            raise ConfigError(f"prefix-tuning config: {loc}: {first['msg']}") from None
    raise IncompatibleAdapterError(
        f"prefix-tuning needs a PrefixTuningConfig, got {type(config).__name__}"
    )


def _gradient_checkpointing_on(model: nn.Module) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


class PrefixAdapter:
    """A prefix attached to one model (implements ``TrainableAdapter``)."""

    def __init__(self, model: nn.Module, config: PrefixTuningConfig, encoder: PrefixEncoder) -> None:
        if hasattr(model, SUBMODULE):
            raise ConfigError("a prefix-tuning adapter is already attached to this model; detach it first")
        if _gradient_checkpointing_on(model):
            # A re-run checkpointed layer would append to the cache a second time.
            raise ConfigError("prefix-tuning cannot train with gradient checkpointing enabled; disable it")
        self.model = model
        self.config = config
        self.encoder = encoder
        self._saved_requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
        for p in model.parameters():
            p.requires_grad_(False)
        model.add_module(SUBMODULE, encoder)
        self._forward_sig = inspect.signature(model.forward)
        self._cache_key = cache_kwarg(model)
        self._handle: Any = model.register_forward_pre_hook(self._pre_hook, with_kwargs=True)

    # --- TrainableAdapter -------------------------------------------------------------------

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """Folded ``prefix.key``/``prefix.value`` (the MLP, if any, applied and dropped)."""
        with torch.no_grad():
            key, value = self.encoder()
        return {
            KEY: key.detach().to("cpu", copy=True).contiguous(),
            VALUE: value.detach().to("cpu", copy=True).contiguous(),
        }

    def detach(self) -> None:
        """Remove hook and encoder and restore ``requires_grad``; idempotent."""
        if self._handle is None:
            return
        self._handle.remove()
        self._handle = None
        if getattr(self.model, SUBMODULE, None) is self.encoder:
            delattr(self.model, SUBMODULE)
        for name, p in self.model.named_parameters():
            p.requires_grad_(self._saved_requires_grad.get(name, p.requires_grad))

    # --- the injection ----------------------------------------------------------------------

    def prefix(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Current prefix (with grad), cast to the attention compute dtype."""
        key, value = self.encoder()
        return key.to(device=device, dtype=dtype), value.to(device=device, dtype=dtype)

    def _compute_dtype(self, device: torch.device) -> torch.dtype:
        # Under autocast k_proj emits the autocast dtype; the cache concatenates the
        # prefix with those keys, so the prefix must already be in that dtype.
        if torch.is_autocast_enabled(device.type):
            return torch.get_autocast_dtype(device.type)
        return self.model.get_input_embeddings().weight.dtype  # type: ignore[operator,no-any-return]

    def _pre_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        kw = dict(self._forward_sig.bind_partial(*args, **kwargs).arguments)
        extra = kw.pop("kwargs", None)
        if isinstance(extra, dict):
            kw.update(extra)
        other = "past_key_values" if self._cache_key == "cache" else "cache"
        cache = kw.get(self._cache_key)
        if cache is None and kw.get(other) is not None:
            cache = kw.pop(other)
        kw.pop(other, None)

        ids, embeds = kw.get("input_ids"), kw.get("inputs_embeds")
        ref = ids if ids is not None else embeds
        if ref is None:
            return (), kw
        batch, q_len = int(ref.shape[0]), int(ref.shape[1])
        device = ref.device
        n = self.config.num_virtual_tokens
        mask = kw.get("attention_mask")
        if mask is not None and mask.dim() != 2:
            raise ConfigError("prefix-tuning supports 2-d attention masks only (got a 4-d mask)")
        pos = kw.get("position_ids")
        past = cache_length(cache)
        offsets = torch.full((batch,), n, dtype=torch.long, device=device)

        if past == 0:
            if _gradient_checkpointing_on(self.model):
                raise TrainingError("prefix-tuning cannot run with gradient checkpointing enabled; disable it")
            key, value = self.prefix(self._compute_dtype(device), device)
            keys = [key[i].unsqueeze(0).expand(batch, -1, -1, -1) for i in range(key.shape[0])]
            values = [value[i].unsqueeze(0).expand(batch, -1, -1, -1) for i in range(value.shape[0])]
            if cache is None:
                cache = prefilled_cache(self.model, keys, values)
            else:
                fill_cache(cache, keys, values)
            setattr(cache, _TAG, n)
            if pos is not None:
                pos = pos + n
            elif mask is not None:
                pos = token_positions(mask, batch, q_len, offsets, device)
            if mask is not None:
                mask = torch.cat([mask.new_ones(batch, n), mask], dim=1)
        elif getattr(cache, _TAG, None) == n:
            # A decoding step on a cache we filled: the caller's mask and positions exclude
            # the prefix (a mask that already covers it means the caller knows; leave it).
            caller_unaware = mask is None or mask.shape[-1] == past - n + q_len
            if caller_unaware and pos is not None:
                pos = pos + n
            elif caller_unaware and mask is not None:
                pos = token_positions(mask, batch, mask.shape[-1], offsets, device)[:, -q_len:]
            if caller_unaware and mask is not None:
                mask = torch.cat([mask.new_ones(batch, n), mask], dim=1)
        kw[self._cache_key] = cache
        kw["attention_mask"] = mask
        if pos is not None:
            kw["position_ids"] = pos
        return (), kw


class PrefixTuningMethod:
    """The ``prefix-tuning`` method plugin object (implements ``Method``)."""

    name = "prefix-tuning"
    kind = "additive"
    description = "Prefix tuning: trainable per-layer key/value virtual tokens; optional reparameterization MLP folded away on save"
    config_cls = PrefixTuningConfig
    capabilities = Capabilities(hot_swap=True, mixed_batch=True, merge=False)
    training_defaults = TrainingDefaults(**TRAINING_DEFAULTS)

    def attach(self, model: nn.Module, config: MethodConfig) -> PrefixAdapter:
        """Freeze ``model`` and attach a freshly initialised prefix (RNG: global torch seed)."""
        cfg = coerce_config(config)
        geometry = geometry_of(model)
        if hasattr(model, SUBMODULE):
            raise ConfigError("a prefix-tuning adapter is already attached to this model; detach it first")
        weight = model.get_input_embeddings().weight  # type: ignore[operator]
        encoder = PrefixEncoder(geometry, cfg.num_virtual_tokens, cfg.projection_hidden, cfg.projection,
                                device=weight.device, dtype=weight.dtype)
        initialise(encoder, model, cfg)
        return PrefixAdapter(model, cfg, encoder)

    def validate(self, model: nn.Module, config: MethodConfig, tensors: Mapping[str, torch.Tensor]) -> None:
        cfg = coerce_config(config)
        validate_prefix_tensors(geometry_of(model), cfg.num_virtual_tokens, tensors)

    def load(self, model: nn.Module, config: MethodConfig, tensors: Mapping[str, torch.Tensor]) -> PrefixAdapter:
        """Validate, then attach the stored (folded) prefix directly, without any MLP."""
        cfg = coerce_config(config)
        geometry = geometry_of(model)
        validate_prefix_tensors(geometry, cfg.num_virtual_tokens, tensors)
        weight = model.get_input_embeddings().weight  # type: ignore[operator]
        # Keep the stored dtype when it is wider than the base: no precision lost on resume.
        dtype = torch.promote_types(weight.dtype, tensors[KEY].dtype)
        encoder = PrefixEncoder(geometry, cfg.num_virtual_tokens, projection=False, device=weight.device, dtype=dtype)
        encoder.set_prefix(tensors[KEY], tensors[VALUE])
        return PrefixAdapter(model, cfg, encoder)

    def runtime(self, model: nn.Module) -> Any:
        from adapterhub.plugins.prefix_tuning.runtime import PrefixRuntime

        return PrefixRuntime(model, method_name=self.name)
