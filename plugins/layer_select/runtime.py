"""Serving-side ``layer-selective``: resident adapters swapped into the base per batch.

A selective adapter *replaces* base tensors, so a forward pass can hold only one of
them (``mixed_batch=False``; the host groups rows). Lifecycle on one frozen base:

* ``plan``: every check (config fits the base, keys, shapes, float dtypes, finite);
  prepares CPU copies in the base dtype (pinned when the base lives on CUDA: page-locked
  memory uploads at full bus speed). Nothing in the model changes.
* ``apply``: keeps the planned tensors resident in host memory and saves an exact CPU
  copy of each base tensor the adapter touches, once per tensor (shared by all resident
  adapters touching it). Copying only, it cannot fail validation.
* ``route``: every row must name the same adapter (or none does: then nothing
  happens); a batch mixing adapters, or an adapter with adapter-less rows, is refused
  with a clear error because the host groups rows per selective adapter. On enter
  ``copy_`` the adapter's tensors into the existing base parameters
  (same objects, same storage, so anything holding a reference sees the swap); on exit
  copy the saved originals back, bit for bit, even if the forward raised.

Cost of a swap: constant Python overhead plus two copies of the selected bytes (in and
out), i.e. proportional to the adapter's size, not the model's (see
docs/method-selective-full.md for measured numbers).

While an adapter is routed the *shared* base weights are changed, so no other forward
may run on the model concurrently (the host serialises forwards); a lock here turns a
concurrent or nested ``route`` into a wait or a clear error rather than silent mixing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

import torch
from adapterhub.plugins.layer_select.tensors import base_tensors, snapshot, write_into

from adapterhub.errors import AdapterUnloadedError, IncompatibleAdapterError
from adapterhub.protocols.method import MethodConfig, SwapPlan, TokenSpan

if TYPE_CHECKING:
    from adapterhub.plugins.layer_select.method import LayerSelectiveMethod


class LayerSelectiveRuntime:
    """One per host base model; implements :class:`adapterhub.protocols.MethodRuntime`."""

    def __init__(self, model: torch.nn.Module, method: LayerSelectiveMethod) -> None:
        self.model = model
        self.method = method
        self._targets, _ = base_tensors(model)
        self._plans: dict[str, SwapPlan] = {}
        self._originals: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()  # guards the base weights while one adapter is in
        self._state_lock = threading.Lock()  # guards the dicts (plan/apply/remove)
        self._active: str | None = None
        self._active_thread: int | None = None

    # -- residency ----------------------------------------------------------------------------
    def plan(self, adapter_id: str, config: MethodConfig, tensors: Mapping[str, torch.Tensor]) -> SwapPlan:
        values = self.method.check(self.model, config, tensors)  # raises; changes nothing
        on_cuda = any(self._targets[n].is_cuda for n in values)
        prepared: dict[str, torch.Tensor] = {}
        for name, value in values.items():
            target = self._targets[name]
            host = value.detach().to(device="cpu", dtype=target.dtype, copy=True).contiguous()
            prepared[name] = host.pin_memory() if on_cuda else host
        nbytes = sum(t.numel() * t.element_size() for t in prepared.values())
        return SwapPlan(adapter_id=adapter_id, method=self.method.name, config=config, tensors=prepared, nbytes=nbytes)

    def apply(self, plan: SwapPlan) -> None:
        with self._state_lock:
            # A tensor not yet in _originals has never been written by this runtime (we
            # save before every first write), so copying it now captures the true base.
            fresh = {n: self._targets[n] for n in plan.tensors if n not in self._originals}
            for n, saved in snapshot(fresh).items():
                # Pinned on CUDA like the plan's tensors: the restore copy is half of every swap.
                self._originals[n] = saved.pin_memory() if fresh[n].is_cuda else saved
            self._plans[plan.adapter_id] = plan

    def remove(self, adapter_id: str) -> None:
        with self._state_lock:
            if adapter_id not in self._plans:
                raise AdapterUnloadedError(f"layer-selective adapter {adapter_id!r} is not resident")
            if self._active == adapter_id:
                raise IncompatibleAdapterError(f"layer-selective adapter {adapter_id!r} is in use by a forward pass")
            del self._plans[adapter_id]
            if self._active is None:  # originals no resident adapter needs are dead weight
                needed = {n for p in self._plans.values() for n in p.tensors}
                self._originals = {n: t for n, t in self._originals.items() if n in needed}

    def resident(self) -> Sequence[str]:
        with self._state_lock:
            return list(self._plans)

    # -- routing -------------------------------------------------------------------------------
    def route_tokens(self, spans: Sequence[TokenSpan], inputs: dict[str, Any]) -> AbstractContextManager[dict[str, Any]]:
        """``PackedRuntime``: the swap is for every token of the forward, so its spans
        must all name one adapter and cover ``[0, T)`` (then this is ``route([id])``), or
        name none (the forward passes through). ``T`` comes from ``input_ids`` or
        ``inputs_embeds``; without either only gaps between spans can be seen."""
        ref = inputs.get("input_ids")
        if ref is None:
            ref = inputs.get("inputs_embeds")
        total = int(ref.shape[1]) if isinstance(ref, torch.Tensor) and ref.dim() >= 2 else None
        named: list[str] = []
        uncovered: tuple[int, int] | None = None  # the first tokens on no adapter
        at = 0
        for sp in spans:
            if sp.start < at or sp.stop < sp.start or (total is not None and sp.stop > total):
                raise ValueError(f"token spans must be sorted, disjoint and inside [0, {'T' if total is None else total}): got {sp}")
            if sp.stop == sp.start:
                continue
            if uncovered is None and sp.start > at:
                uncovered = (at, sp.start)
            if sp.adapter_id is None:
                uncovered = uncovered or (sp.start, sp.stop)
            elif sp.adapter_id not in named:
                named.append(sp.adapter_id)
            at = sp.stop
        if uncovered is None and total is not None and at < total:
            uncovered = (at, total)
        if len(named) > 1:
            raise IncompatibleAdapterError(
                "layer-selective adapters rewrite base weights, so one packed forward can use only one; "
                f"its token spans name {', '.join(repr(n) for n in named)}"
            )
        if named and uncovered is not None:
            # The swapped weights are shared by every token: those would get the adapter.
            raise IncompatibleAdapterError(
                f"layer-selective adapter {named[0]!r} rewrites base weights for every token of a packed "
                f"forward, but tokens [{uncovered[0]}, {uncovered[1]}) are on no adapter"
            )
        return self.route(named or [None], inputs)

    def initial_kv(self, adapter_id: str) -> None:
        """``PackedRuntime``: a selective adapter adds nothing to a request's cache."""
        return None

    def _single(self, rows: Sequence[str | None]) -> str | None:
        named = list(dict.fromkeys(r for r in rows if r is not None))
        if len(named) > 1:
            raise IncompatibleAdapterError(
                "layer-selective adapters rewrite base weights, so one batch can use only one; "
                f"rows name {', '.join(repr(n) for n in named)} (group rows per adapter)"
            )
        if named and any(r is None for r in rows):
            # The swap changes the shared weights, so a row asking for no adapter would
            # silently get this one; the host never sends such a batch.
            raise IncompatibleAdapterError(
                f"layer-selective adapter {named[0]!r} rewrites base weights for every row; rows "
                "without an adapter cannot share its batch (group rows per adapter)"
            )
        return named[0] if named else None

    @contextmanager
    def route(self, rows: Sequence[str | None], inputs: dict[str, Any]) -> Iterator[dict[str, Any]]:
        adapter_id = self._single(rows)
        if adapter_id is None:
            yield inputs
            return
        with self._state_lock:
            plan = self._plans.get(adapter_id)
        if plan is None:
            raise AdapterUnloadedError(f"layer-selective adapter {adapter_id!r} is not resident")
        if self._active is not None and self._active_thread == threading.get_ident():
            raise IncompatibleAdapterError(
                f"layer-selective: cannot route {adapter_id!r} inside the route of {self._active!r}"
            )
        with self._lock:
            names = list(plan.tensors)
            with self._state_lock:
                self._active, self._active_thread = adapter_id, threading.get_ident()
            try:
                write_into(self._targets, plan.tensors, names)
                yield inputs
            finally:
                # Restore every touched tensor even when the copy-in or the forward failed
                # halfway; restoring an untouched tensor is a harmless same-value copy.
                write_into(self._targets, self._originals, names)
                with self._state_lock:
                    self._active, self._active_thread = None, None


__all__ = ["LayerSelectiveRuntime"]
