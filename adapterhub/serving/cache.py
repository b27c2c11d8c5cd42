"""The KV cache of one decode group: preallocated, right-aligned rows, in-place appends.

Layout, per layer: keys and values of shape ``(row_capacity, kv_heads, col_capacity,
head_dim)``. Live rows are ``[0, rows)`` (a leaving row is replaced by the last one, so
the batch stays dense). Every row ends at the same column ``end``: a decode step writes
each row's new key/value at column ``end`` and advances it by one, so no step copies
the cache (``DynamicCache`` re-concatenates the whole cache every step; at 16 rows ×
400 tokens on SmolLM2 that is ~300 MB of copying per step). Row ``i`` starts at column
``first[i]`` (its prefix slots, then its prompt); columns before it are masked. The
forward sees the window ``[start, end]`` with ``start = min(first)``.

A joining row's prefill cache is copied in right-aligned (``first = end - length``);
when it is longer than ``end``, or the columns run out, the live window is re-packed
into fresh buffers with head room, so re-packs are rare (amortised like a growing list).

The mask handed to the model is a ready 4-D additive mask ``(rows, 1, q, window)``:
transformers uses a 4-D mask as given, so causality inside a multi-token chunk, the
masked prefix slots and each row's left edge are all encoded here.

The object implements the two methods a transformers decoder calls on its cache,
``update`` and ``get_seq_length``; nothing else of ``Cache`` is used.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adapterhub.host.packed import attention


def _kv_of(cache: object) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-layer key/value tensors ``(batch, heads, tokens, dim)`` of a DynamicCache."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [layer.keys for layer in layers], [layer.values for layer in layers]
    # Older transformers: key_cache / value_cache lists.
    return list(cache.key_cache), list(cache.value_cache)  # type: ignore[attr-defined]


class SlotCache:
    """KV storage of one group's rows (see module docs)."""

    def __init__(self, num_layers: int, kv_heads: int, head_dim: int, *, dtype: torch.dtype, device: torch.device) -> None:
        self.num_layers, self.kv_heads, self.head_dim = num_layers, kv_heads, head_dim
        self.dtype, self.device = dtype, device
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.valid = torch.zeros(0, 0, dtype=torch.bool, device=device)  # (row_cap, col_cap)
        self.rows = 0
        self.end = 0
        self.first: list[int] = []
        self._alloc(4, 64)

    # --- storage -------------------------------------------------------------------------
    def _alloc(self, row_cap: int, col_cap: int) -> None:
        shape = (row_cap, self.kv_heads, col_cap, self.head_dim)
        keys = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.num_layers)]
        values = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.num_layers)]
        valid = torch.zeros(row_cap, col_cap, dtype=torch.bool, device=self.device)
        new_end = self._new_end
        if self.rows:
            start = self.start
            width = self.end - start
            for src, dst in ((self.keys, keys), (self.values, values)):
                for s, d in zip(src, dst, strict=True):
                    d[: self.rows, :, new_end - width : new_end] = s[: self.rows, :, start : self.end]
            valid[: self.rows, new_end - width : new_end] = self.valid[: self.rows, start : self.end]
            shift = new_end - self.end
            self.first = [f + shift for f in self.first]
        self.end = new_end
        self.keys, self.values, self.valid = keys, values, valid

    _new_end = 0  # where ``end`` lands in a re-pack (set by the caller of _alloc)

    @property
    def row_capacity(self) -> int:
        return int(self.valid.shape[0])

    @property
    def col_capacity(self) -> int:
        return int(self.valid.shape[1])

    @property
    def start(self) -> int:
        return min(self.first) if self.first else self.end

    @property
    def width(self) -> int:
        """Columns the next forward attends over, before its own tokens."""
        return self.end - self.start

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def _repack(self, rows_needed: int, left_needed: int, right_needed: int) -> None:
        """Fresh buffers holding the live window, ``end`` at least ``left_needed`` and with
        ``right_needed`` free columns after it; head room so the next re-pack is far."""
        width = max(self.width, left_needed)
        cols = width + right_needed
        col_cap = max(64, cols + max(cols // 2, 32))
        row_cap = max(self.row_capacity, 4)
        while row_cap < rows_needed:
            row_cap *= 2
        self._new_end = width
        self._alloc(row_cap, col_cap)

    def reserve(self, new_tokens: int) -> None:
        """Make room for a forward that appends ``new_tokens`` columns to every row."""
        if self.end + new_tokens > self.col_capacity:
            self._repack(self.rows, 0, new_tokens)

    # --- rows ----------------------------------------------------------------------------
    def add_row(self, prefill_cache: object, mask: torch.Tensor, index: int = 0) -> int:
        """Copy row ``index`` of a prefill cache (and its 1-D key mask) in; returns the
        new row's index here. Masked columns (left padding, unused prefix slots) come
        along and stay masked."""
        keys, values = _kv_of(prefill_cache)
        return self.add_row_kv([k[index] for k in keys], [v[index] for v in values], mask)

    def add_row_kv(self, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor], mask: torch.Tensor | None = None) -> int:
        """Copy one request's per-layer keys/values ``(kv_heads, length, head_dim)`` in
        (``mask``: which columns are real; None: all); returns the new row's index."""
        length = int(keys[0].shape[1])
        if mask is None:
            mask = torch.ones(length, dtype=torch.bool, device=self.device)
        if mask.shape[-1] != length:
            raise ValueError(f"prefill mask covers {mask.shape[-1]} keys, cache holds {length}")
        if self.rows == 0:  # an empty group starts over at the left edge
            self.first = []
            self.end = length if length + 1 <= self.col_capacity else 0
        if self.rows + 1 > self.row_capacity or length > self.end or self.end + 1 > self.col_capacity:
            self._repack(self.rows + 1, length, 1)
        i = self.rows
        lo = self.end - length
        for layer in range(self.num_layers):
            self.keys[layer][i, :, lo : self.end] = keys[layer].to(self.dtype)
            self.values[layer][i, :, lo : self.end] = values[layer].to(self.dtype)
        self.valid[i].zero_()
        self.valid[i, lo : self.end] = mask.reshape(-1).to(torch.bool)
        self.first.append(lo)
        self.rows += 1
        return i

    def remove_row(self, i: int) -> int | None:
        """Drop row ``i``; the last row moves into its place. Returns the moved row's old
        index (the caller re-numbers it as ``i``), or None if nothing moved."""
        last = self.rows - 1
        moved: int | None = None
        if i != last:
            lo = min(self.first[i], self.first[last])
            for t in (*self.keys, *self.values):
                t[i, :, lo : self.end] = t[last, :, lo : self.end]
            self.valid[i, lo : self.end] = self.valid[last, lo : self.end]
            self.first[i] = self.first[last]
            moved = last
        self.valid[last].zero_()
        self.first.pop()
        self.rows -= 1
        return moved

    # --- one forward ---------------------------------------------------------------------
    def step_mask(self, new_tokens: int, dtype: torch.dtype) -> torch.Tensor:
        """Additive 4-D mask ``(rows, 1, new_tokens, window)`` for a forward appending
        ``new_tokens`` real tokens to every live row (causal among themselves)."""
        lo, end, rows = self.start, self.end, self.rows
        self.valid[:rows, end : end + new_tokens] = True
        ok = self.valid[:rows, None, None, lo : end + new_tokens]  # (rows, 1, 1, window)
        if new_tokens > 1:
            ok = ok.expand(rows, 1, new_tokens, ok.shape[-1]).clone()
            causal = torch.ones(new_tokens, new_tokens, dtype=torch.bool, device=self.device).tril()
            ok[:, :, :, end - lo :] &= causal
        mask = torch.zeros(ok.shape, dtype=dtype, device=self.device)
        return mask.masked_fill_(~ok, torch.finfo(dtype).min)

    def advance(self, new_tokens: int) -> None:
        self.end += new_tokens

    def row_kv(self, i: int, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Row ``i``'s keys/values of its own columns ``[start, stop)`` (counted from its
        first column), every layer stacked: ``(layers, kv_heads, n, head_dim)`` copies."""
        lo = self.first[i]
        if lo + stop > self.end:
            raise ValueError(f"row {i} holds {self.end - lo} columns, not {stop}")
        keys = torch.stack([k[i, :, lo + start : lo + stop] for k in self.keys])
        values = torch.stack([v[i, :, lo + start : lo + stop] for v in self.values])
        return keys, values

    def decode_segment(self) -> DecodeSegment:
        """This group's part of a packed forward: one new token per live row."""
        return DecodeSegment(self)

    # The decoder's view of this object: transformers calls these two.
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.width

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        n = key_states.shape[2]
        rows, lo, end = self.rows, self.start, self.end
        k, v = self.keys[layer_idx], self.values[layer_idx]
        k[:rows, :, end : end + n] = key_states
        v[:rows, :, end : end + n] = value_states
        return k[:rows, :, lo : end + n], v[:rows, :, lo : end + n]


class DecodeSegment:
    """A packed forward's tokens for a decode group (``adapterhub.host.packed.Segment``):
    token ``i`` is row ``i``'s next token, attending over the group's window with the
    same step mask a separate decode forward would use. The caller advances the cache
    after the forward."""

    def __init__(self, cache: SlotCache) -> None:
        cache.reserve(1)
        self.cache = cache
        self.rows = cache.rows
        self.mask = cache.step_mask(1, cache.dtype)  # (rows, 1, 1, window)

    @property
    def tokens(self) -> int:
        return self.rows

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        c = self.cache
        c.keys[layer][: self.rows, :, c.end] = keys.transpose(0, 1)
        c.values[layer][: self.rows, :, c.end] = values.transpose(0, 1)

    def attend(self, layer: int, query: torch.Tensor, scaling: float) -> torch.Tensor:
        c = self.cache
        lo, hi = c.start, c.end + 1
        k = c.keys[layer][: self.rows, :, lo:hi]
        v = c.values[layer][: self.rows, :, lo:hi]
        out = attention(query.transpose(0, 1).unsqueeze(2), k, v, self.mask, scaling)  # (rows, heads, 1, d)
        return out[:, :, 0]
