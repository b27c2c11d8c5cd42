"""IA³ serving side: many resident adapters on one frozen base, selected per batch row.

Each adapted linear's vectors live in a stacked tensor ``(slots, features)``; slot 0 is
all ones (no adapter), so a row without an IA³ adapter — or a row of another method in
a mixed batch — is multiplied by exactly one. A forward selects vectors by *gathering*
``stack[index]`` with a per-row slot index: one kernel for the whole batch, whatever the
number of distinct adapters. Switching adapters is only a new route (constant time).

Hooks are placed when a route that uses IA³ is entered, on whatever module sits at each
path at that moment, and removed on exit: outside a route the base runs untouched, and
another runtime wrapping the same linears (LoRA replaces ``k_proj`` with a multi-adapter
layer) cannot make IA³ silently stop applying. Placing ~3 hooks per layer costs a few
microseconds per route, once per batch rather than per token.

``plan`` does every check and conversion and changes nothing; ``apply`` only grows the
stacks (capacity doubles, so appends are amortised O(1)) and copies into a free slot.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adapterhub.errors import AdapterUnloadedError, IncompatibleAdapterError
from adapterhub.protocols.method import MethodConfig, SwapPlan
from adapterhub_ia3.method import _ATTACHED, KEY_SUFFIX, Position, linear_at, validate_tensors

INITIAL_SLOTS = 4


@dataclass(frozen=True)
class _Route:
    slot: int | None  # every row uses this slot (fast path)
    index: torch.Tensor | None  # else: row -> slot


class IA3Runtime:
    """``MethodRuntime`` of the ``ia3`` method on one base model."""

    def __init__(self, model: nn.Module) -> None:
        if model in _ATTACHED:
            raise IncompatibleAdapterError("this model already carries IA³ hooks (a training adapter or another runtime)")
        self.model = model
        self._stacks: dict[str, torch.Tensor] = {}
        self._positions: dict[str, Position] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._resident: dict[str, int] = {}
        self._free: list[int] = []
        self._next_slot = 1
        self._capacity = 0
        self._route: _Route | None = None
        self._lock = threading.RLock()
        _ATTACHED.add(model)

    # --- MethodRuntime ------------------------------------------------------------------
    def plan(self, adapter_id: str, config: MethodConfig, tensors: Mapping[str, torch.Tensor]) -> SwapPlan:
        cfg, targets = validate_tensors(self.model, config, tensors)
        if adapter_id in self._resident:
            raise IncompatibleAdapterError(f"ia3 adapter id {adapter_id!r} is already resident; remove it first")
        converted: dict[str, torch.Tensor] = {}
        for t in targets:
            existing = self._positions.get(t.path)
            if existing is not None and existing != t.position:
                raise IncompatibleAdapterError(
                    f"ia3 adapter {adapter_id!r} scales the {t.position} of {t.path!r}; resident adapters scale its {existing}"
                )
            weight = linear_at(self.model, t.path).weight
            converted[t.key] = tensors[t.key].to(device=weight.device, dtype=weight.dtype).contiguous()
        nbytes = sum(v.numel() * v.element_size() for v in converted.values())
        positions = {t.path: t.position for t in targets}
        return SwapPlan(adapter_id=adapter_id, method="ia3", config=cfg, tensors=converted, nbytes=nbytes, extra={"positions": positions})

    def apply(self, plan: SwapPlan) -> None:
        assert plan.extra is not None, "apply() needs a plan made by IA3Runtime.plan()"
        positions: dict[str, Position] = dict(plan.extra["positions"])
        with self._lock:
            if plan.adapter_id in self._resident:
                raise RuntimeError(f"ia3 adapter id {plan.adapter_id!r} is already resident")
            slot = self._free.pop() if self._free else self._next_slot
            # Allocation first (the only step that can fail), copies last.
            try:
                self._reserve(slot + 1)
                for path, position in positions.items():
                    if path not in self._stacks:
                        self._track(path, position)
            except BaseException:
                if slot < self._next_slot:
                    self._free.append(slot)
                raise
            with torch.no_grad():
                for path, stack in self._stacks.items():
                    key = path + KEY_SUFFIX
                    if key in plan.tensors:
                        stack[slot].copy_(plan.tensors[key])
                    else:
                        stack[slot].fill_(1.0)
            self._next_slot = max(self._next_slot, slot + 1)
            self._resident[plan.adapter_id] = slot

    def remove(self, adapter_id: str) -> None:
        with self._lock:
            slot = self._resident.pop(adapter_id, None)
            if slot is None:
                raise AdapterUnloadedError(f"ia3 adapter {adapter_id!r} is not resident")
            with torch.no_grad():
                for stack in self._stacks.values():
                    stack[slot].fill_(1.0)
            self._free.append(slot)

    def resident(self) -> Sequence[str]:
        return list(self._resident)

    @contextmanager
    def route(self, rows: Sequence[str | None], inputs: dict[str, Any]) -> Iterator[dict[str, Any]]:
        ids = inputs.get("input_ids")
        if isinstance(ids, torch.Tensor) and ids.dim() >= 1 and ids.shape[0] != len(rows):
            raise ValueError(f"ia3 route got {len(rows)} rows for a batch of {ids.shape[0]}")
        new = self.build_route(rows)
        prev = self._route
        # Hooks exist only while a route that uses IA³ is active, and are placed on the
        # modules present at that moment: a LoRA runtime that wrapped k_proj after this
        # runtime was created is then scaled too, instead of silently bypassing IA³.
        installed = self._install_hooks() if new is not None and not self._handles else []
        self._handles.extend(installed)
        self._route = new
        try:
            yield inputs
        finally:
            self._route = prev
            for handle in installed:
                handle.remove()
            del self._handles[len(self._handles) - len(installed) :]

    # --- extras ---------------------------------------------------------------------------
    def build_route(self, rows: Sequence[str | None]) -> _Route | None:
        slots: list[int] = []
        for r in rows:
            if r is None:
                slots.append(0)
                continue
            slot = self._resident.get(r)
            if slot is None:
                raise AdapterUnloadedError(f"ia3 adapter {r!r} is not resident")
            slots.append(slot)
        if not any(slots):
            return None
        if all(s == slots[0] for s in slots):
            return _Route(slot=slots[0], index=None)
        device = next(iter(self._stacks.values())).device
        return _Route(slot=None, index=torch.tensor(slots, dtype=torch.long, device=device))

    def close(self) -> None:
        """Remove every hook and adapter; the base is untouched throughout."""
        with self._lock:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
            self._stacks.clear()
            self._positions.clear()
            self._resident.clear()
            self._free.clear()
            self._next_slot, self._capacity = 1, 0
            _ATTACHED.discard(self.model)

    # --- internals -----------------------------------------------------------------------
    def _reserve(self, slots_needed: int) -> None:
        capacity = self._capacity or INITIAL_SLOTS + 1
        while capacity < slots_needed:
            capacity *= 2
        if capacity == self._capacity:
            return
        grown: dict[str, torch.Tensor] = {}
        for path, stack in self._stacks.items():
            new = torch.ones(capacity, stack.shape[1], dtype=stack.dtype, device=stack.device)
            new[: stack.shape[0]].copy_(stack)
            grown[path] = new
        self._stacks.update(grown)
        self._capacity = capacity

    def _scales(self, path: str, x: torch.Tensor) -> torch.Tensor | None:
        route = self._route
        if route is None:
            return None
        stack = self._stacks[path]
        if route.slot is not None:
            return stack[route.slot].to(x.dtype)
        assert route.index is not None
        rows = stack.index_select(0, route.index).to(x.dtype)  # (B, F): one gather
        return rows.view(rows.shape[0], *([1] * (x.dim() - 2)), rows.shape[1])

    def _track(self, path: str, position: Position) -> None:
        module = linear_at(self.model, path)
        weight = module.weight
        features = module.in_features if position == "input" else module.out_features
        # New layer: every slot in use so far reads as ones (those adapters don't touch it).
        self._stacks[path] = torch.ones(self._capacity, features, dtype=weight.dtype, device=weight.device)
        self._positions[path] = position

    def _install_hooks(self) -> list[torch.utils.hooks.RemovableHandle]:
        """Hook whatever module sits at each path *now* (another runtime may have wrapped it)."""
        handles: list[torch.utils.hooks.RemovableHandle] = []
        for path, position in self._positions.items():
            module = self.model.get_submodule(path)
            if position == "input":
                handles.append(module.register_forward_pre_hook(self._pre_hook(path)))
            else:
                handles.append(module.register_forward_hook(self._post_hook(path)))
        return handles

    def _pre_hook(self, path: str) -> Any:
        def pre_hook(mod: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            scales = self._scales(path, args[0])
            return None if scales is None else (args[0] * scales, *args[1:])

        return pre_hook

    def _post_hook(self, path: str) -> Any:
        def hook(mod: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor | None:
            scales = self._scales(path, output)
            return None if scales is None else output * scales

        return hook
