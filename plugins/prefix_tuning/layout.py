"""Prefix geometry, validation, the cache plumbing and the PEFT tensor mapping.

Everything here is shared by the training side (``method.py``) and the serving side
(``runtime.py``), so both agree on what a valid prefix is and how it reaches attention.

Stored layout (fixed by :mod:`adapterhub.protocols.method`): ``prefix.key`` and
``prefix.value``, each ``(num_layers, num_key_value_heads, num_virtual_tokens,
head_dim)``. The keys are used *as is* by attention: they are not rotated again by RoPE
(they already play the role of rotated keys), exactly as in peft.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from adapterhub.errors import IncompatibleAdapterError

KEY = "prefix.key"
VALUE = "prefix.value"
PREFIX_KEYS = (KEY, VALUE)
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@dataclass(frozen=True)
class PrefixGeometry:
    """The attention shape a prefix must match on one base model."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int

    def shape(self, num_virtual_tokens: int) -> tuple[int, int, int, int]:
        """Shape of ``prefix.key`` / ``prefix.value`` for ``num_virtual_tokens`` tokens."""
        return (self.num_layers, self.num_kv_heads, num_virtual_tokens, self.head_dim)

    @property
    def flat_dim(self) -> int:
        """Width of one virtual token in the PEFT flat layout (``L * 2 * Hkv * D``)."""
        return self.num_layers * 2 * self.num_kv_heads * self.head_dim


def _text_config(model: torch.nn.Module) -> Any:
    config = getattr(model, "config", None)
    if config is None:
        raise IncompatibleAdapterError(
            f"prefix-tuning needs a transformers model with a config, got {type(model).__name__}"
        )
    if hasattr(config, "get_text_config"):
        config = config.get_text_config(decoder=True)
    return config


def geometry_of(model: torch.nn.Module) -> PrefixGeometry:
    """Read layers / kv heads / head_dim from a decoder-only causal LM's config.

    Raises IncompatibleAdapterError for models prefix tuning does not support here:
    encoder-decoders and models with sliding-window or non-attention layers (their caches
    would drop or mis-place the prefix).
    """
    config = _text_config(model)
    name = type(model).__name__
    if getattr(config, "is_encoder_decoder", False):
        raise IncompatibleAdapterError(f"prefix-tuning supports decoder-only causal LMs; {name} is an encoder-decoder")
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and any(t != "full_attention" for t in layer_types):
        odd = sorted({str(t) for t in layer_types if t != "full_attention"})
        raise IncompatibleAdapterError(
            f"prefix-tuning supports full-attention layers only; {name} has layer types {odd}"
        )
    try:
        num_layers = int(config.num_hidden_layers)
        num_heads = int(config.num_attention_heads)
        hidden = int(config.hidden_size)
    except (AttributeError, TypeError) as err:
        raise IncompatibleAdapterError(
            f"prefix-tuning cannot read the attention geometry of {name}: {err}"
        ) from None
    kv_heads = getattr(config, "num_key_value_heads", None) or num_heads
    head_dim = getattr(config, "head_dim", None) or hidden // num_heads
    return PrefixGeometry(num_layers, int(kv_heads), int(head_dim), hidden)


def validate_prefix_tensors(
    geometry: PrefixGeometry, num_virtual_tokens: int, tensors: Mapping[str, torch.Tensor]
) -> None:
    """Check keys, shapes, dtypes and finiteness; raise IncompatibleAdapterError naming the problem."""
    missing = [k for k in PREFIX_KEYS if k not in tensors]
    if missing:
        raise IncompatibleAdapterError(f"prefix-tuning adapter is missing tensor(s) {missing}")
    unexpected = sorted(k for k in tensors if k not in PREFIX_KEYS)
    if unexpected:
        shown = unexpected[:5] + (["..."] if len(unexpected) > 5 else [])
        raise IncompatibleAdapterError(
            f"prefix-tuning adapter has unexpected tensor(s) {shown}; only {list(PREFIX_KEYS)} are allowed"
        )
    want = geometry.shape(num_virtual_tokens)
    dims = ("num_layers", "num_key_value_heads", "num_virtual_tokens", "head_dim")
    for key in PREFIX_KEYS:
        t = tensors[key]
        if not isinstance(t, torch.Tensor):
            raise IncompatibleAdapterError(f"{key} is a {type(t).__name__}, not a tensor")
        got = tuple(t.shape)
        if got != want:
            if len(got) != len(want):
                raise IncompatibleAdapterError(
                    f"{key} has shape {list(got)}, expected {list(want)} (num_layers, num_key_value_heads, num_virtual_tokens, head_dim)"
                )
            bad = next(i for i in range(4) if got[i] != want[i])
            raise IncompatibleAdapterError(
                f"{key} has shape {list(got)}, expected {list(want)}: {dims[bad]} is {got[bad]}, the model/config needs {want[bad]}"
            )
        if t.dtype not in FLOAT_DTYPES:
            raise IncompatibleAdapterError(f"{key} has dtype {t.dtype}, expected a floating dtype")
        if not bool(torch.isfinite(t).all()):
            raise IncompatibleAdapterError(f"{key} contains NaN or infinite values")
    if tensors[KEY].dtype != tensors[VALUE].dtype:
        raise IncompatibleAdapterError(
            f"{KEY} and {VALUE} have different dtypes ({tensors[KEY].dtype} vs {tensors[VALUE].dtype})"
        )


# --- the cache -------------------------------------------------------------------------------


def cache_kwarg(model: torch.nn.Module) -> str:
    """Name of the forward kwarg that takes the KV cache.

    transformers 5.x renamed ``past_key_values`` to ``cache`` (the old name still works
    with a FutureWarning until 5.40); use whichever the model's forward declares.
    """
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def output_cache(outputs: Any) -> Any:
    """The cache returned by a forward, under either name."""
    cache = getattr(outputs, "cache", None)
    if cache is None:
        cache = getattr(outputs, "past_key_values", None)
    return cache


def prefilled_cache(
    model: torch.nn.Module, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor]
) -> DynamicCache:
    """A DynamicCache whose layer ``l`` already holds ``keys[l]`` / ``values[l]``.

    Each tensor is ``(batch, num_kv_heads, slots, head_dim)``. Built with the model's
    config so the cache has the layer types the model expects.
    """
    config = getattr(model, "config", None)
    cache = DynamicCache(config=config)
    fill_cache(cache, keys, values)
    return cache


def fill_cache(cache: Any, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> None:
    """Append per-layer prefix key/values to an (empty) cache through its public API."""
    for layer_idx, (k, v) in enumerate(zip(keys, values, strict=True)):
        cache.update(k, v, layer_idx)


def cache_length(cache: Any) -> int:
    """Tokens already in ``cache`` (0 for ``None``)."""
    if cache is None:
        return 0
    return int(cache.get_seq_length())


# --- PEFT interop ----------------------------------------------------------------------------


def to_peft_prompt_embeddings(key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Our ``prefix.key``/``prefix.value`` -> peft's ``prompt_embeddings``.

    peft (``PrefixTuningConfig(prefix_projection=False)``) keeps one embedding of shape
    ``(T, L*2*Hkv*D)`` and reads it as ``view(T, L, 2, Hkv, D)``: for virtual token
    ``t``, layer ``l``, kv head ``h``: key = ``[t, l, 0, h, :]``, value = ``[t, l, 1, h, :]``.
    """
    if key.shape != value.shape or key.dim() != 4:
        raise IncompatibleAdapterError(
            f"prefix key/value must share one 4-d shape, got {list(key.shape)} and {list(value.shape)}"
        )
    num_layers, kv_heads, tokens, head_dim = key.shape
    stacked = torch.stack([key, value], dim=1)  # (L, 2, Hkv, T, D)
    return stacked.permute(3, 0, 1, 2, 4).reshape(tokens, num_layers * 2 * kv_heads * head_dim).contiguous()


def from_peft_prompt_embeddings(
    embeddings: torch.Tensor, geometry: PrefixGeometry
) -> dict[str, torch.Tensor]:
    """peft's ``prompt_embeddings`` ``(T, L*2*Hkv*D)`` -> our ``prefix.key``/``prefix.value``."""
    if embeddings.dim() != 2 or embeddings.shape[1] != geometry.flat_dim:
        raise IncompatibleAdapterError(
            f"peft prompt_embeddings has shape {list(embeddings.shape)}, expected [num_virtual_tokens, {geometry.flat_dim}] "
            f"(num_layers*2*num_key_value_heads*head_dim = {geometry.num_layers}*2*{geometry.num_kv_heads}*{geometry.head_dim})"
        )
    tokens = embeddings.shape[0]
    view = embeddings.reshape(tokens, geometry.num_layers, 2, geometry.num_kv_heads, geometry.head_dim)
    kv = view.permute(1, 2, 3, 0, 4)  # (L, 2, Hkv, T, D)
    return {KEY: kv[:, 0].contiguous(), VALUE: kv[:, 1].contiguous()}


# --- positions -------------------------------------------------------------------------------


def token_positions(
    mask: torch.Tensor | None, batch: int, length: int, offsets: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """RoPE positions ``(batch, length)`` for real tokens that follow a prefix.

    Row ``i``'s real tokens get ``offsets[i] + cumsum(mask) - 1`` (left padding skipped,
    as transformers' ``generate`` does); pad slots get ``offsets[i]``, a valid position
    whose value never matters because pads are masked out as keys. Without a mask every
    token is real.
    """
    if mask is None:
        base = torch.arange(length, device=device, dtype=torch.long).expand(batch, length)
    else:
        m = mask.to(device=device, dtype=torch.long)
        base = (m.cumsum(-1) - 1).masked_fill(m == 0, 0)
    return base + offsets.to(device=device, dtype=torch.long).view(-1, 1)
