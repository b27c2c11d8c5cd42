"""LoRA layers: a trainable single-adapter linear and a multi-adapter serving linear.

Both replace an ``nn.Linear`` in its parent module but *share its Parameter objects*
(registered under the same names ``weight``/``bias``), so while they are installed the
base's ``state_dict`` keys are unchanged, and putting the original module back gives the
base bit for bit. The original module is kept outside the module tree (not a submodule)
so its parameters are not listed twice.

Speed. Without an adapter the product is exactly ``F.linear(x, W, b)`` (what ``nn.Linear``
runs). With one adapter, :func:`lora_linear` computes the small low-rank product first and
lets the big base GEMM accumulate into it (``out = s·(x Aᵀ) Bᵀ; out.addmm_(x, Wᵀ)``): the
base GEMM reads its accumulator while it is compute-bound, so the update costs no extra
memory pass over the output, where peft's ``base(x) + lora_B(lora_A(x)) * s`` makes three
(measured on SmolLM2-135M shapes: +4.7 % over the bare GEMM on an MLP projection at r=16,
against +7.9 % for a separate in-place add). Safe under autograd: no backward formula
needs an output that is later modified in place.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

HALF_DTYPES = (torch.float16, torch.bfloat16)


def lora_linear(
    x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, h: torch.Tensor, b: torch.Tensor, scale: float
) -> torch.Tensor:
    """``x2 Wᵀ + bias + scale · h Bᵀ`` for 2-D ``x2`` (tokens, in) and ``h = x2 Aᵀ``.

    Shared by the training layer and the serving fast path so that both compute the
    same floating-point result.
    """
    if scale != 1.0:
        h = h * scale  # (tokens, r): tiny, unlike scaling the (tokens, out) product
    out = torch.mm(h, b.t()) if bias is None else torch.addmm(bias, h, b.t())
    if torch.is_autocast_enabled(x2.device.type):
        # Autocast skips in-place ops, so ``out`` (already cast) and the fp32 base weight
        # would meet with different dtypes; the out-of-place form is cast like the rest.
        return torch.addmm(out, x2, weight.t())
    return out.addmm_(x2, weight.t())


class _SharedLinear(nn.Module):
    """Common part: owns no base weights, only references the replaced ``nn.Linear``'s."""

    in_features: int
    out_features: int
    weight: nn.Parameter
    bias: nn.Parameter | None

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.register_parameter("weight", cast(nn.Parameter, base.weight))
        self.register_parameter("bias", base.bias)
        # Outside the module tree on purpose (see module docstring).
        object.__setattr__(self, "original", base)

    @property
    def base_linear(self) -> nn.Linear:
        """The ``nn.Linear`` this layer replaced (same Parameter objects)."""
        base = self.__dict__["original"]
        assert isinstance(base, nn.Linear)
        return base

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class LoraLinear(_SharedLinear):
    """``y = x W^T + b + scale * B (A dropout(x))`` with trainable ``lora_A``/``lora_B``.

    Parameters are named ``lora_A`` (r, in) and ``lora_B`` (out, r) so the model's
    ``state_dict`` keys equal the stored adapter keys. On a half-precision base the LoRA
    parameters are kept in fp32 (as peft does by default): their updates are tiny
    relative to their values and would otherwise round away.
    """

    def __init__(self, base: nn.Linear, r: int, scaling: float, dropout: float, init: str | None) -> None:
        super().__init__(base)
        w = base.weight
        dtype = torch.float32 if w.dtype in HALF_DTYPES else w.dtype
        self.r = r
        self.scaling = float(scaling)
        self.dropout_p = float(dropout)
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, dtype=dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, dtype=dtype, device=w.device))
        if init == "kaiming":  # peft's default: same distribution as nn.Linear's weight
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        elif init == "gaussian":
            nn.init.normal_(self.lora_A, std=1.0 / r)
        elif init is None:  # weights will be copied in by ``load``: spend no RNG draws
            nn.init.zeros_(self.lora_A)
        else:
            raise ValueError(f"unknown LoRA init {init!r}")
        self._original_weight: torch.Tensor | None = None

    @property
    def merged(self) -> bool:
        return self._original_weight is not None

    def delta_weight(self) -> torch.Tensor:
        """``scale * B @ A`` in fp32 (the dense update that ``merge`` folds in)."""
        return (self.lora_B.detach().float() @ self.lora_A.detach().float()) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight, keeping an exact copy of the original."""
        if self.merged:
            return
        self._original_weight = self.weight.detach().clone()
        self.weight.add_(self.delta_weight().to(self.weight.dtype))

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the base weight bit for bit (copy back, no subtraction round-off)."""
        if self._original_weight is None:
            return
        self.weight.copy_(self._original_weight)
        self._original_weight = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._original_weight is not None:
            return F.linear(x, self.weight, self.bias)
        # 2-D views: the in-place accumulate then hits a non-view tensor, so autograd
        # records a plain AddmmBackward (a view would add a CopySlices grad copy).
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        a, b = self.lora_A, self.lora_B
        h_in = x2 if x2.dtype == a.dtype else x2.to(a.dtype)
        if self.dropout_p > 0.0 and self.training:
            h_in = F.dropout(h_in, self.dropout_p, training=True)
        h = F.linear(h_in, a)
        if x2.dtype != b.dtype:  # half base, fp32 LoRA parameters
            out = F.linear(x2, self.weight, self.bias) + (F.linear(h, b) * self.scaling).to(x2.dtype)
        else:
            out = lora_linear(x2, self.weight, self.bias, h, b, self.scaling)
        return out.view(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r={self.r}, scaling={self.scaling:g}, dropout={self.dropout_p:g}"


# --- serving ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotGroup:
    """The rows (or, in a packed forward, the tokens) of one forward that use one slot."""

    slot: int
    scale: float
    rank: int
    sel: slice | torch.Tensor
    """A slice when they are contiguous (a view, no copy), else a long index tensor."""
    count: int


def select(indices: Sequence[int], device: torch.device) -> slice | torch.Tensor:
    """A slice for contiguous ascending ``indices``, else an index tensor."""
    lo = indices[0]
    if list(indices) == list(range(lo, lo + len(indices))):
        return slice(lo, lo + len(indices))
    return torch.tensor(list(indices), dtype=torch.long, device=device)


SEGMENT_MIN = 8
"""An adapter with at least this many tokens in a forward gets its own shrink/expand
(SGMV-style: one GEMM over its contiguous tokens); fewer, and its tokens are gathered
with the other small ones into one batched matmul (BGMV-style: A and B gathered per
token). Measured on SmolLM2 shapes, one CPU thread, 16 decode tokens on 16 adapters:
969 µs per layer as 16 tiny GEMMs against 296 µs gathered; on one adapter the
segment GEMM wins (627 against 1,344 µs on the 576→1536 r16 MLP projection)."""


@dataclass(frozen=True)
class Gather:
    """Rows (or tokens) whose adapters are gathered per row: ``index`` is each one's
    slot (0: no adapter, an all-zero slot), ``scales`` its scale ``(n, 1, 1)``."""

    sel: slice | torch.Tensor
    index: torch.Tensor
    scales: torch.Tensor
    rank: int
    count: int


@dataclass
class Route:
    """One forward's adapter selection, shared by every multi-adapter layer.

    ``mask`` has bit ``s`` set for every slot used by some row; a layer whose own mask
    does not intersect it does no LoRA work at all. ``slot`` is set when every row uses
    the same adapter (the fast path: one low-rank product accumulated into the base
    GEMM). Otherwise the work is split by *distinct adapter*: ``groups`` holds one
    :class:`SlotGroup` per adapter that gets its own shrink and expand, and ``gather``
    the rows or tokens whose A and B are gathered per row (see :data:`SEGMENT_MIN`).

    A packed route (``packed``: the tokens of a ``(1, T)`` forward) uses both: a segment
    for each long run of tokens on one adapter (a prompt chunk), one gather for the rest
    (decode tokens; ``LoraRuntime._packed``). A per-row route holds both forms over all
    rows and picks at the forward: segments when each row brings at least
    ``SEGMENT_MIN`` tokens, else the gather.
    """

    mask: int
    rank: int
    slot: int | None = None
    scale: float = 0.0
    groups: tuple[SlotGroup, ...] = ()
    gather: Gather | None = None
    packed: bool = False
    rows: int = 0
    """Rows of the batch a per-row route was built for."""
    _expanded: dict[int, tuple[tuple[SlotGroup, ...], Gather | None]] = field(default_factory=dict)

    def parts_for(self, batch: int, seq: int) -> tuple[tuple[SlotGroup, ...], Gather | None]:
        """The segments and the gather of a forward whose batch is ``batch`` rows of
        ``seq`` tokens (packed: ``batch`` tokens).

        Beam search and ``num_return_sequences`` repeat each request row
        ``batch // rows`` times consecutively (``repeat_interleave``), so the route
        follows that layout instead of failing.
        """
        if self.packed:
            return self.groups, self.gather
        if batch != self.rows:
            if batch % self.rows:
                raise RuntimeError(f"LoRA route has {self.rows} rows but the forward got a batch of {batch}")
            got = self._expanded.get(batch)
            if got is None:
                got = self._expanded[batch] = self._expand(batch // self.rows)
            groups, gather = got
        else:
            groups, gather = self.groups, self.gather
        return (groups, None) if seq >= SEGMENT_MIN or gather is None else ((), gather)

    def _expand(self, k: int) -> tuple[tuple[SlotGroup, ...], Gather | None]:
        out = []
        for g in self.groups:
            if isinstance(g.sel, slice):
                sel: slice | torch.Tensor = slice(g.sel.start * k, g.sel.stop * k)
            else:
                sel = (g.sel.unsqueeze(1) * k + torch.arange(k, device=g.sel.device)).flatten()
            out.append(SlotGroup(g.slot, g.scale, g.rank, sel, g.count * k))
        gather = self.gather
        if gather is not None:
            gather = Gather(slice(0, gather.count * k), gather.index.repeat_interleave(k),
                            gather.scales.repeat_interleave(k, dim=0), gather.rank, gather.count * k)
        return tuple(out), gather


class Router(threading.local):
    """The active route, per thread, so concurrent forwards cannot see each other's rows."""

    route: Route | None = None


def _zero(views: list[torch.Tensor], into: list[torch.Tensor] | None) -> None:
    """Zero ``views`` now, or leave them to the caller's one fused zeroing (``into``)."""
    if into is None:
        torch._foreach_zero_(views)
    else:
        into.extend(views)


class MultiLoraLinear(_SharedLinear):
    """A linear serving many resident adapters from stacked slot tensors.

    ``lora_A``: (slots, r_max, in), ``lora_B``: (slots, out, r_max), both in the base
    weight's dtype/device; smaller ranks are zero-padded (exact: the padding contributes
    0). Slot 0 is all zeros. ``mask`` has bit ``s`` set when slot ``s`` holds a non-zero
    adapter for this layer. Stacks are non-persistent buffers: they follow
    ``model.to(...)`` but never enter the base's ``state_dict``.
    """

    lora_A: torch.Tensor
    lora_B: torch.Tensor
    router: Router
    extent: list[int]

    def __init__(self, base: nn.Linear, router: Router, capacity: int, r_max: int, zero_slots: int) -> None:
        super().__init__(base)
        object.__setattr__(self, "router", router)
        w = base.weight
        # torch.empty: pages of never-used slots are not touched, so they cost no RSS.
        self.register_buffer("lora_A", torch.empty(capacity, r_max, self.in_features, dtype=w.dtype, device=w.device), persistent=False)
        self.register_buffer("lora_B", torch.empty(capacity, self.out_features, r_max, dtype=w.dtype, device=w.device), persistent=False)
        with torch.no_grad():
            self.lora_A[:zero_slots].zero_()
            self.lora_B[:zero_slots].zero_()
        self.mask = 0  # bit s: slot s holds a non-zero adapter for this layer
        # extent[s]: ranks [extent[s], r_max) of slot s are known to be zero. Writes zero
        # only what may be non-zero, so loading an adapter into a slot whose previous
        # occupant did not touch this layer (or had no higher rank) costs no memset here.
        # Never-written slots hold garbage (torch.empty): extent r_max, nothing known.
        object.__setattr__(self, "extent", [0] * zero_slots + [r_max] * (capacity - zero_slots))

    def resize(self, capacity: int, r_max: int, used_slots: int) -> None:
        """Reallocate the stacks; slots below ``used_slots`` keep their data (zero-padded)."""
        old_a, old_b = self.lora_A, self.lora_B
        r_old = old_a.shape[1]
        n = min(used_slots, old_a.shape[0], capacity)
        new_a = torch.empty(capacity, r_max, self.in_features, dtype=old_a.dtype, device=old_a.device)
        new_b = torch.empty(capacity, self.out_features, r_max, dtype=old_b.dtype, device=old_b.device)
        with torch.no_grad():
            rk = min(r_old, r_max)
            new_a[:n, :rk].copy_(old_a[:n, :rk])
            new_b[:n, :, :rk].copy_(old_b[:n, :, :rk])
            if r_max > r_old:
                new_a[:n, r_old:].zero_()
                new_b[:n, :, r_old:].zero_()
        # Kept slots keep their extent (ranks above r_old were just zeroed); the rest are new garbage.
        extent = [min(e, rk) for e in self.extent[:n]] + [r_max] * (capacity - n)
        # Swap in only fully built tensors: a forward in another thread sees old or new.
        self.lora_A, self.lora_B = new_a, new_b
        object.__setattr__(self, "extent", extent)

    @torch.no_grad()
    def write_slot(self, slot: int, a: torch.Tensor | None, b: torch.Tensor | None) -> None:
        """Copy one adapter's (r, in)/(out, r) pair into ``slot`` (None: zero the slot)."""
        if a is None or b is None:
            self.zero_slot(slot)
            return
        dst = self.slot_views(slot, a.shape[0])
        dst[0].copy_(a)
        dst[1].copy_(b)
        self.set_bit(slot)

    def slot_views(self, slot: int, r: int, zeros: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The (r, in)/(out, r) views of ``slot`` to copy an adapter into.

        Ranks above ``r`` that may hold data are zeroed (padding up to r_max keeps the
        slot exact): here, or, when ``zeros`` is given, by the caller, who gets the views
        to zero appended to it. A caller copies into the views (all of them before the
        slot is used) and then calls :meth:`set_bit`; the runtime does the zeroing and
        the copies of every layer in one ``torch._foreach_zero_`` and one ``_foreach_copy_``.
        """
        a, b = self.lora_A.select(0, slot), self.lora_B.select(0, slot)
        known = self.extent[slot]
        if known > r:
            _zero([a.narrow(0, r, known - r), b.narrow(1, r, known - r)], zeros)
        self.extent[slot] = r
        return a.narrow(0, 0, r), b.narrow(1, 0, r)

    def zero_slot(self, slot: int, zeros: list[torch.Tensor] | None = None) -> None:
        """Make ``slot`` read as zero in this layer and clear its bit (``zeros``: as in :meth:`slot_views`)."""
        known = self.extent[slot]
        if known:
            _zero([self.lora_A.select(0, slot).narrow(0, 0, known), self.lora_B.select(0, slot).narrow(1, 0, known)], zeros)
            self.extent[slot] = 0
        self.clear_slot(slot)

    # The mask is a plain int set through object.__setattr__: nn.Module.__setattr__
    # checks its parameter/buffer/module tables first and cost ~1.7 ms per load over
    # the 210 layers of an all-linear adapter.
    def set_bit(self, slot: int) -> None:
        object.__setattr__(self, "mask", self.mask | (1 << slot))

    def clear_slot(self, slot: int) -> None:
        """Forget a slot. Its data stays; the next write zeroes what its extent says may be non-zero."""
        object.__setattr__(self, "mask", self.mask & ~(1 << slot))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        route = self.router.route
        if route is None or not (route.mask & self.mask):
            return F.linear(x, self.weight, self.bias)  # exactly the base linear, no extra work
        r = route.rank
        if route.slot is not None:
            s = route.slot
            x2 = x.reshape(-1, self.in_features)
            h = F.linear(x2, self.lora_A[s, :r])
            y = lora_linear(x2, self.weight, self.bias, h, self.lora_B[s, :, :r], route.scale)
            return y.view(*x.shape[:-1], self.out_features)
        # One shrink and one expand per distinct adapter over its rows (or tokens): the
        # base GEMM runs once over everything, and no per-row gather of A and B.
        out = F.linear(x, self.weight, self.bias)
        if route.packed:
            x3 = x.reshape(-1, 1, self.in_features)  # token t is "row" t
            o3 = out.view(-1, 1, self.out_features)
        else:
            x3 = x.reshape(x.shape[0], -1, self.in_features)
            o3 = out.view(x.shape[0], -1, self.out_features)
        groups, gather = route.parts_for(x3.shape[0], x3.shape[1])
        for g in groups:
            if not (self.mask >> g.slot) & 1:
                continue  # this adapter has no weights on this layer
            a = self.lora_A[g.slot, : g.rank]  # (r, in)
            b = self.lora_B[g.slot, :, : g.rank]  # (out, r)
            if isinstance(g.sel, slice):
                xs = x3[g.sel].reshape(-1, self.in_features)
                h = torch.mm(xs, a.t()).mul_(g.scale)
                o3[g.sel].view(-1, self.out_features).addmm_(h, b.t())
            else:
                xs = x3.index_select(0, g.sel).reshape(-1, self.in_features)
                h = torch.mm(xs, a.t()).mul_(g.scale)
                o3.index_add_(0, g.sel, torch.mm(h, b.t()).view(g.count, -1, self.out_features))
        if gather is not None:
            r = gather.rank
            a3 = self.lora_A[:, :r].index_select(0, gather.index)  # (n, r, in)
            b3 = self.lora_B[:, :, :r].index_select(0, gather.index)  # (n, out, r)
            if isinstance(gather.sel, slice):
                # Every row (a per-row decode step): no view to make (~2 us each).
                whole = gather.count == x3.shape[0]
                xs3 = x3 if whole else x3[gather.sel]
                h3 = torch.bmm(xs3, a3.transpose(1, 2)).mul_(gather.scales)
                (o3 if whole else o3[gather.sel]).baddbmm_(h3, b3.transpose(1, 2))
            else:
                xs3 = x3.index_select(0, gather.sel)
                h3 = torch.bmm(xs3, a3.transpose(1, 2)).mul_(gather.scales)
                o3.index_add_(0, gather.sel, torch.bmm(h3, b3.transpose(1, 2)))
        return out

    def extra_repr(self) -> str:
        slots, r_max = self.lora_A.shape[0], self.lora_A.shape[1]
        return f"{super().extra_repr()}, slots={slots}, r_max={r_max}"
