"""Packed forwards: many requests' tokens in one forward, each attending to its own cache.

A serving step used to run one forward per decode group and one more per prefill chunk,
and every forward reads every weight again: on a CPU a 64-token prefill chunk of
SmolLM2-135M spends ~100 ms of its ~220 ms re-reading weights the decode forward had just
read. A *packed* forward lays the step's tokens end to end in one batch-1 sequence
(``input_ids``/``position_ids`` of shape ``(1, T)``): every decoding row's next token, then
each prefilling request's next chunk (SARATHI-style chunked prefill piggybacked on
decode). The projections and the MLP see one ``(T, hidden)`` matrix; only attention must
keep requests apart, and it does here:

* the sequence is cut into :class:`Segment` s, each owning its tokens' keys/values and
  what they attend to: a decode group (one token per row, against the group's
  right-aligned cache; :class:`adapterhub.serving.cache.SlotCache` implements it) or one
  request's prompt chunk (:class:`RowKV`, a request's own contiguous cache);
* a :class:`PackedCache` passed as the model's ``cache`` hands each segment its new keys
  and values (``update``), and an attention function registered with transformers
  (``adapterhub_packed``) runs one ``scaled_dot_product_attention`` per segment and lays
  the outputs back end to end. It is selected only for the packed forward itself, under
  the host's forward lock, and the model is given a ready 4-D mask so transformers builds
  none.

Adapters are routed per *token span* (``PackedRuntime.route_tokens``, protocols/method.py);
a method whose runtime cannot do that is served by per-row forwards instead. The logits
come back only for the positions asked for (``keep``), so a 64-token chunk that does not
end its prompt costs no vocabulary projection.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from adapterhub.errors import IncompatibleAdapterError
from adapterhub.protocols.method import PackedRuntime, TokenSpan

ATTENTION = "adapterhub_packed"


class Segment(Protocol):
    """A contiguous run of a packed forward's tokens and the cache they attend to."""

    @property
    def tokens(self) -> int:
        """How many tokens of the packed sequence this segment holds."""
        ...

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Store this forward's keys/values ``(kv_heads, tokens, head_dim)`` of ``layer``."""
        ...

    def attend(self, layer: int, query: torch.Tensor, scaling: float) -> torch.Tensor:
        """Attention output ``(tokens, heads, head_dim)`` for ``query`` ``(heads, tokens, head_dim)``."""
        ...


def attention(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None, scaling: float) -> torch.Tensor:
    """``softmax(q kᵀ · scaling + mask) v`` with grouped-query heads: ``query``
    ``(B, heads, q, d)``, ``keys``/``values`` ``(B, kv_heads, k, d)``."""
    heads, kv_heads = query.shape[1], keys.shape[1]
    if heads != kv_heads:
        # enable_gqa broadcasts kv heads without copying them on the CPU kernels too.
        return F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=scaling, enable_gqa=True)
    return F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=scaling)


class RowKV:
    """One request's own cache while its prompt is prefilled: ``(layers, kv_heads, capacity,
    head_dim)`` keys and values, filled left to right, every column valid."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, capacity: int, *, dtype: torch.dtype, device: torch.device | str) -> None:
        shape = (layers, kv_heads, capacity, head_dim)
        self.keys = torch.empty(shape, dtype=dtype, device=device)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        self.length = 0

    @property
    def capacity(self) -> int:
        return int(self.keys.shape[2])

    def extend(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Append ready keys/values ``(layers, kv_heads, n, head_dim)`` (an adapter's
        initial state, or prefix-cache blocks)."""
        n = int(keys.shape[2])
        if self.length + n > self.capacity:
            raise ValueError(f"row cache holds {self.capacity} tokens; {self.length} + {n} do not fit")
        self.keys[:, :, self.length : self.length + n].copy_(keys)
        self.values[:, :, self.length : self.length + n].copy_(values)
        self.length += n

    def span(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of columns ``[start, stop)``, every layer: ``(layers, kv_heads, n, head_dim)``."""
        return self.keys[:, :, start:stop], self.values[:, :, start:stop]

    def chunk(self, n: int) -> Chunk:
        """The segment of a forward that appends this request's next ``n`` tokens."""
        if self.length + n > self.capacity:
            raise ValueError(f"row cache holds {self.capacity} tokens; {self.length} + {n} do not fit")
        return Chunk(self, n)

    def nbytes(self) -> int:
        return 2 * self.keys.numel() * self.keys.element_size()


class Chunk:
    """The next ``n`` tokens of one request, attending causally to its :class:`RowKV`.
    :meth:`commit` (after the forward) makes them part of the row's cache."""

    def __init__(self, row: RowKV, n: int) -> None:
        self.row, self.n, self.start = row, n, row.length
        self._mask: torch.Tensor | None = None
        if n > 1:
            # Token i sits at column start + i and sees columns [0, start + i]: built once
            # per forward, shared by every layer.
            cols = torch.arange(self.start + n, device=row.keys.device)
            rows = torch.arange(n, device=row.keys.device).unsqueeze(1) + self.start
            self._mask = (cols.unsqueeze(0) <= rows).view(1, 1, n, self.start + n)

    @property
    def tokens(self) -> int:
        return self.n

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        stop = self.start + self.n
        self.row.keys[layer, :, self.start : stop] = keys
        self.row.values[layer, :, self.start : stop] = values

    def attend(self, layer: int, query: torch.Tensor, scaling: float) -> torch.Tensor:
        stop = self.start + self.n
        k = self.row.keys[layer, :, :stop].unsqueeze(0)
        v = self.row.values[layer, :, :stop].unsqueeze(0)
        out = attention(query.unsqueeze(0), k, v, self._mask, scaling)  # (1, heads, n, d)
        return out[0].transpose(0, 1)

    def commit(self) -> None:
        self.row.length = self.start + self.n


class PackedCache:
    """The ``cache`` a packed forward's decoder layers write to: each segment stores its
    own tokens' keys/values (the decoder calls ``update``; nothing else of ``Cache``)."""

    def __init__(self, segments: Sequence[Segment]) -> None:
        self.segments = list(segments)
        self.bounds: list[tuple[int, int]] = []
        at = 0
        for seg in self.segments:
            self.bounds.append((at, at + seg.tokens))
            at += seg.tokens
        self.total = at

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # positions are always given; nothing reads this for a packed forward

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = key_states[0], value_states[0]  # (kv_heads, T, d)
        for seg, (lo, hi) in zip(self.segments, self.bounds, strict=True):
            seg.write(layer_idx, k[:, lo:hi], v[:, lo:hi])
        return key_states, value_states


class _Active(threading.local):
    cache: PackedCache | None = None


_active = _Active()


def _packed_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                      **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention interface for a packed forward: ``query`` ``(1, heads, T, d)``
    → ``(1, T, heads, d)``, one attention per segment."""
    cache = _active.cache
    if cache is None:
        raise RuntimeError("adapterhub_packed attention runs only inside packed_forward")
    layer = int(module.layer_idx)  # type: ignore[arg-type]
    scale = float(scaling) if scaling is not None else query.shape[-1] ** -0.5
    q = query[0]
    outs = [seg.attend(layer, q[:, lo:hi], scale) for seg, (lo, hi) in zip(cache.segments, cache.bounds, strict=True)]
    return torch.cat(outs, dim=0).unsqueeze(0), None


_registered = False
_register_lock = threading.Lock()


def _register() -> None:
    global _registered
    with _register_lock:
        if not _registered:
            from transformers import AttentionInterface

            AttentionInterface.register(ATTENTION, _packed_attention)
            _registered = True


def _attention_configs(model: torch.nn.Module) -> list[Any]:
    """The config objects the model's attention modules read their implementation from."""
    seen: dict[int, Any] = {}
    for module in model.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(module, "layer_idx") and hasattr(cfg, "_attn_implementation_internal"):
            seen.setdefault(id(cfg), cfg)
    if not seen:
        cfg = getattr(model, "config", None)
        text = cfg.get_text_config() if cfg is not None and hasattr(cfg, "get_text_config") else cfg
        if text is not None:
            seen[id(text)] = text
    return list(seen.values())


@contextmanager
def _using_packed_attention(model: torch.nn.Module, cache: PackedCache) -> Iterator[None]:
    _register()
    configs = _attention_configs(model)
    before = [c._attn_implementation_internal for c in configs]
    _active.cache = cache
    try:
        for c in configs:
            c._attn_implementation_internal = ATTENTION
        yield
    finally:
        for c, impl in zip(configs, before, strict=True):
            c._attn_implementation_internal = impl
        _active.cache = None


Routes = Sequence[tuple[PackedRuntime, Sequence[TokenSpan]]]


def token_routes(runtimes: Mapping[str, object], spans: Sequence[tuple[tuple[str, str] | None, int, int]]) -> list[tuple[PackedRuntime, list[TokenSpan]]]:
    """Group a packed forward's token runs by method: ``spans`` gives each run ``[start,
    stop)`` with its ``(method name, adapter id)`` (None: no adapter); adjacent runs of one
    adapter merge into one span."""
    out: dict[str, list[TokenSpan]] = {}
    for who, start, stop in spans:
        if who is None or stop <= start:
            continue
        method, adapter_id = who
        mine = out.setdefault(method, [])
        if mine and mine[-1].adapter_id == adapter_id and mine[-1].stop == start:
            mine[-1] = TokenSpan(adapter_id, mine[-1].start, stop)
        else:
            mine.append(TokenSpan(adapter_id, start, stop))
    routes: list[tuple[PackedRuntime, list[TokenSpan]]] = []
    for method, found in out.items():
        rt = runtimes[method]
        if not isinstance(rt, PackedRuntime):
            raise IncompatibleAdapterError(f"method {method!r} cannot serve packed forwards")
        routes.append((rt, found))
    return routes


def packable(runtime: object) -> bool:
    """True when ``runtime`` can route packed forwards (implements ``PackedRuntime``)."""
    return isinstance(runtime, PackedRuntime)


@torch.no_grad()
def packed_forward(model: torch.nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor,
                   segments: Sequence[Segment], routes: Routes, keep: torch.Tensor) -> torch.Tensor:
    """One forward over ``input_ids`` ``(1, T)`` cut into ``segments`` (in order, covering
    all ``T`` tokens), each token at its own request's position; returns the logits
    ``(len(keep), vocab)`` of the positions in ``keep`` (a 1-D index tensor)."""
    cache = PackedCache(segments)
    total = int(input_ids.shape[1])
    if cache.total != total:
        raise ValueError(f"segments hold {cache.total} tokens, the forward has {total}")
    # A ready 4-D mask makes transformers skip building one; the packed attention ignores it.
    dummy = torch.zeros(1, 1, total, 1, dtype=next(model.parameters()).dtype, device=input_ids.device)
    kwargs: dict[str, Any] = {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": dummy}
    with ExitStack() as stack:
        for runtime, spans in routes:
            kwargs = stack.enter_context(runtime.route_tokens(spans, kwargs))
        stack.enter_context(_using_packed_attention(model, cache))
        out = model(**kwargs, cache=cache, use_cache=True, logits_to_keep=keep)
    return out.logits[0]
