"""Serving side of prefix tuning: resident prefixes and per-row routing on a frozen base.

A prefix never touches base weights, so residency is just a dict of device tensors and a
swap is a dict update. ``route`` turns a (possibly mixed) batch into the prefill kwargs:

* ``cache``: a ``DynamicCache`` whose layer ``l`` holds, for row ``i``, that row's prefix
  keys/values in slots ``[0, T_i)`` and zeros in ``[T_i, P)`` (``P`` = longest prefix in
  the batch; rows without a prefix have ``T_i = 0``);
* ``attention_mask``: ``[slot mask (1 for slots < T_i) | the given mask]``;
* ``position_ids``: row ``i``'s real tokens at ``T_i + cumsum(mask) - 1`` (so a row is
  computed exactly as if it ran alone with its own prefix, left padding skipped).

The causal mask in transformers is index based (query offset = cache length), and
masked slots get exactly zero attention weight, so the padded slots change nothing; only
RoPE reads ``position_ids``. After the prefill, decoding is generic: pass back the
returned cache, append a ``1`` column to the mask and use ``position_ids = last + 1``
(see :func:`adapterhub.plugins.prefix_tuning.decode.greedy_decode`).

``route`` on a forward whose cache already holds tokens (a decode step, or the second
chunk of a chunked prefill in the serving engine) passes the kwargs through: the rows'
prefixes entered the cache with their first forward and stay there.

In a packed forward (``PackedRuntime``: many requests' tokens in one ``(1, T)``
sequence) the engine seeds each request's own cache with :meth:`PrefixRuntime.initial_kv`,
the adapter's ``(L, Hkv, T, D)`` virtual tokens, and positions the request's tokens from
``T`` on, as ``route`` does; ``route_tokens`` then has nothing to add and passes the
inputs through (after checking every span's adapter is resident).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
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
from adapterhub.plugins.prefix_tuning.method import coerce_config
from torch import nn

from adapterhub.errors import AdapterUnloadedError, ConfigError, IncompatibleAdapterError
from adapterhub.protocols.method import MethodConfig, SwapPlan, TokenSpan


@dataclass(frozen=True)
class ResidentPrefix:
    """One resident adapter: keys/values ``(L, Hkv, T, D)`` in the base's dtype and device."""

    key: torch.Tensor
    value: torch.Tensor

    @property
    def num_tokens(self) -> int:
        return int(self.key.shape[2])


class PrefixRuntime:
    """``MethodRuntime`` for prefix tuning on one frozen base model."""

    def __init__(self, model: nn.Module, method_name: str = "prefix-tuning") -> None:
        self.model = model
        self.method_name = method_name
        self.geometry = geometry_of(model)
        self._cache_key = cache_kwarg(model)
        self._resident: dict[str, ResidentPrefix] = {}
        # route() snapshots the dict under this lock so a concurrent apply/remove never
        # gives one batch a mix of old and new state.
        self._lock = threading.Lock()

    def _target(self) -> tuple[torch.device, torch.dtype]:
        weight = self.model.get_input_embeddings().weight  # type: ignore[operator]
        return weight.device, weight.dtype

    # --- residency ----------------------------------------------------------------------------

    def plan(self, adapter_id: str, config: MethodConfig, tensors: Mapping[str, torch.Tensor]) -> SwapPlan:
        """Validate against this base and convert to its dtype/device; nothing resident changes."""
        cfg = coerce_config(config)
        validate_prefix_tensors(self.geometry, cfg.num_virtual_tokens, tensors)
        device, dtype = self._target()
        converted = {
            k: tensors[k].detach().to(device=device, dtype=dtype, copy=True).contiguous() for k in (KEY, VALUE)
        }
        for k, t in converted.items():
            # A finite fp32 value can overflow a half-precision base (e.g. 1e5 in fp16).
            if not bool(torch.isfinite(t).all()):
                raise IncompatibleAdapterError(f"{k} overflows the base dtype {dtype}")
        nbytes = sum(t.numel() * t.element_size() for t in converted.values())
        return SwapPlan(adapter_id=adapter_id, method=self.method_name, config=cfg, tensors=converted, nbytes=nbytes)

    def apply(self, plan: SwapPlan) -> None:
        """Make the planned prefix resident (replacing any previous one under the same id)."""
        entry = ResidentPrefix(plan.tensors[KEY], plan.tensors[VALUE])
        with self._lock:
            self._resident[plan.adapter_id] = entry

    def remove(self, adapter_id: str) -> None:
        with self._lock:
            if self._resident.pop(adapter_id, None) is None:
                raise AdapterUnloadedError(f"prefix-tuning adapter {adapter_id!r} is not resident")

    def resident(self) -> Sequence[str]:
        with self._lock:
            return list(self._resident)

    def get(self, adapter_id: str) -> ResidentPrefix:
        """The resident tensors of one adapter (read-only use)."""
        with self._lock:
            entry = self._resident.get(adapter_id)
        if entry is None:
            raise AdapterUnloadedError(f"prefix-tuning adapter {adapter_id!r} is not resident")
        return entry

    # --- routing ------------------------------------------------------------------------------

    @contextmanager
    def route(self, rows: Sequence[str | None], inputs: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Yield prefill kwargs with per-row prefixes (see module docs); mutates nothing."""
        yield self.prefill_kwargs(rows, inputs)

    @contextmanager
    def route_tokens(self, spans: Sequence[TokenSpan], inputs: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """``PackedRuntime``: nothing to select per token. The engine started each
        request's own cache with :meth:`initial_kv` and placed its tokens after the
        virtual ones, which is all a prefix does; the forward passes through."""
        with self._lock:
            missing = sorted({sp.adapter_id for sp in spans if sp.adapter_id is not None and sp.adapter_id not in self._resident})
        if missing:
            raise AdapterUnloadedError(f"prefix-tuning adapter(s) {missing} are not resident")
        yield inputs

    def initial_kv(self, adapter_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``PackedRuntime``: the adapter's virtual tokens ``(L, Hkv, T, D)``: a request's
        cache starts with them, and its own tokens take positions ``T, T + 1, ...``
        (as :meth:`route` places them)."""
        entry = self.get(adapter_id)
        return entry.key, entry.value

    def prefill_kwargs(self, rows: Sequence[str | None], inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The kwargs ``route`` yields, as a plain function."""
        ref = inputs.get("input_ids")
        if ref is None:
            ref = inputs.get("inputs_embeds")
        if ref is None:
            raise ConfigError("prefix-tuning route needs input_ids or inputs_embeds")
        batch, length = int(ref.shape[0]), int(ref.shape[1])
        if len(rows) != batch:
            raise ConfigError(f"prefix-tuning route got {len(rows)} row adapters for a batch of {batch}")
        with self._lock:
            missing = sorted({r for r in rows if r is not None and r not in self._resident})
            entries = {r: self._resident[r] for r in rows if r is not None and r in self._resident}
        if missing:
            raise AdapterUnloadedError(f"prefix-tuning adapter(s) {missing} are not resident")
        kwargs = dict(inputs)
        if not entries:
            return kwargs  # no prefix rows: leave the batch exactly as the caller built it

        other = "past_key_values" if self._cache_key == "cache" else "cache"
        cache = kwargs.pop(self._cache_key, None)
        if cache is None:
            cache = kwargs.pop(other, None)
        kwargs.pop(other, None)
        if cache_length(cache) != 0:
            # A forward that continues rows (a decode step, or a later prefill chunk):
            # each row's prefix went into the cache with its first forward and lives there
            # with the row's history, so there is nothing to add (method protocol: route).
            kwargs[self._cache_key] = cache
            return kwargs
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() != 2:
            raise ConfigError("prefix-tuning route supports 2-d attention masks only")

        device, dtype = self._target()
        lens = torch.tensor([entries[r].num_tokens if r is not None else 0 for r in rows], device=device)
        slots = int(lens.max())
        g = self.geometry
        keys = torch.zeros(g.num_layers, batch, g.num_kv_heads, slots, g.head_dim, device=device, dtype=dtype)
        values = torch.zeros_like(keys)
        # One copy per distinct adapter (broadcast over its rows), not per row.
        for adapter_id, entry in entries.items():
            idx = [i for i, r in enumerate(rows) if r == adapter_id]
            t = entry.num_tokens
            keys[:, idx, :, :t] = entry.key.unsqueeze(1)
            values[:, idx, :, :t] = entry.value.unsqueeze(1)

        per_layer_k = [keys[i] for i in range(g.num_layers)]
        per_layer_v = [values[i] for i in range(g.num_layers)]
        if cache is None:
            cache = prefilled_cache(self.model, per_layer_k, per_layer_v)
        else:
            fill_cache(cache, per_layer_k, per_layer_v)

        slot_mask = torch.arange(slots, device=device).unsqueeze(0) < lens.unsqueeze(1)
        given = mask if mask is not None else torch.ones(batch, length, dtype=torch.long, device=ref.device)
        pos = kwargs.get("position_ids")
        if pos is not None:
            pos = pos + lens.to(pos.device).view(-1, 1)
        else:
            pos = token_positions(given, batch, length, lens, ref.device)
        kwargs[self._cache_key] = cache
        kwargs["attention_mask"] = torch.cat([slot_mask.to(device=given.device, dtype=given.dtype), given], dim=1)
        kwargs["position_ids"] = pos
        return kwargs
