"""Base tensors by name: tied-weight aliases, strict adapter-tensor checks, reversible writes.

Shared by the ``layer-selective`` and ``full`` methods, whose adapters *are* base
tensors stored under the base's own names (see :mod:`adapterhub.protocols.method`).

Tied weights: SmolLM2 (and most small Llamas) tie ``lm_head.weight`` to
``model.embed_tokens.weight``: one ``Parameter`` reachable under two names. Everything
here works on *canonical* names, the first name ``model.state_dict()`` /
``model.named_parameters()`` gives (``model.embed_tokens.weight``), so a tied tensor is
stored, checked and written exactly once. An adapter file that uses another alias
(``lm_head.weight``) is accepted and mapped onto the canonical name; naming the same
tensor twice is an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch

from adapterhub.errors import IncompatibleAdapterError


def base_tensors(model: torch.nn.Module, *, buffers: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(canonical name → parameter (or persistent buffer), every alias → canonical name).

    With ``buffers=False`` only parameters are listed; with ``True`` the persistent
    buffers of ``state_dict()`` too (what a full model checkpoint holds).
    """
    params = set(map(id, model.parameters()))
    canonical: dict[int, str] = {}
    tensors: dict[str, torch.Tensor] = {}
    alias_of: dict[str, str] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if not buffers and id(tensor) not in params:
            continue
        first = canonical.setdefault(id(tensor), name)
        alias_of[name] = first
        if first == name:
            tensors[name] = tensor
    return tensors, alias_of


def check_tensors(
    model: torch.nn.Module,
    expected: Sequence[str],
    tensors: Mapping[str, torch.Tensor],
    *,
    what: str,
    buffers: bool = False,
    not_selected: str = "not selected by the adapter's config",
) -> dict[str, torch.Tensor]:
    """Map adapter ``tensors`` onto the base tensors named by ``expected`` (canonical).

    Every check runs before anything is returned and nothing is modified: each key names
    a base tensor (alias allowed) that ``expected`` contains, exactly once; shapes equal;
    dtypes floating point (a different float dtype is cast on write, e.g. an fp32
    adapter onto a bf16 GPU base); every value finite. ``what`` prefixes the one-line
    :class:`IncompatibleAdapterError` messages. Returns canonical name → given tensor.
    """
    base, alias_of = base_tensors(model, buffers=buffers)
    wanted = set(expected)
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            raise IncompatibleAdapterError(f"{what}: {key!r} is a {type(value).__name__}, not a tensor")
        canon = alias_of.get(key)
        if canon is None:
            raise IncompatibleAdapterError(f"{what}: unexpected tensor {key!r}: the base model has no tensor of that name")
        if canon not in wanted:
            raise IncompatibleAdapterError(f"{what}: unexpected tensor {key!r}: {not_selected}")
        if canon in out:
            raise IncompatibleAdapterError(f"{what}: tensor {canon!r} is given twice (tied names {key!r} and {canon!r})")
        target = base[canon]
        if tuple(value.shape) != tuple(target.shape):
            raise IncompatibleAdapterError(
                f"{what}: tensor {key!r} has shape {tuple(value.shape)}, the base has {tuple(target.shape)}"
            )
        if not value.is_floating_point() or not target.is_floating_point():
            if value.dtype != target.dtype:
                raise IncompatibleAdapterError(f"{what}: tensor {key!r} has dtype {value.dtype}, the base has {target.dtype}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise IncompatibleAdapterError(f"{what}: tensor {key!r} has NaN or infinite values")
        out[canon] = value
    missing = [n for n in expected if n not in out]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise IncompatibleAdapterError(f"{what}: missing tensor {missing[0]!r}{more}")
    return out


def snapshot(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Exact CPU copies (same dtype, contiguous, never aliasing the originals)."""
    return {n: t.detach().to("cpu", copy=True).contiguous() for n, t in tensors.items()}


@torch.no_grad()
def write_into(targets: Mapping[str, torch.Tensor], values: Mapping[str, torch.Tensor], names: Iterable[str]) -> None:
    """In-place ``copy_`` of ``values[n]`` into ``targets[n]``: identity and storage stay.

    ``copy_`` casts dtype and moves device; from a same-dtype source it is bit-exact.
    """
    for n in names:
        targets[n].copy_(values[n])


class BaseTensorAdapter:
    """A trainable adapter whose parameters are base tensors themselves.

    ``attach``: remembers ``requires_grad`` of every parameter, keeps an exact CPU copy of
    every tensor in ``names`` (+ ``extra`` buffers), then freezes everything and unfreezes
    exactly ``names``. ``detach``: copies the originals back in place (the same
    ``Parameter`` objects, bit for bit) and restores the ``requires_grad`` flags.
    """

    def __init__(
        self, model: torch.nn.Module, names: Sequence[str], *, buffers: bool = False, keep_originals: bool = True
    ) -> None:
        self.model = model
        base, _ = base_tensors(model, buffers=buffers)
        params = dict(model.named_parameters())  # canonical names, tied once
        self.names = list(names)
        # ``full`` also stores persistent buffers (a complete checkpoint); they never train.
        extra = [n for n in base if n not in params] if buffers else []
        self.state_names = self.names + extra
        self._targets = {n: base[n] for n in self.state_names}
        self._trainable = [params[n] for n in self.names]
        # keep_originals=False (full fine-tuning that never detaches) saves a base's memory.
        self._originals = snapshot(self._targets) if keep_originals else {}
        self._requires_grad = {n: p.requires_grad for n, p in params.items()}
        self.attached = True
        for p in params.values():
            p.requires_grad_(False)
        for p in self._trainable:
            p.requires_grad_(True)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self._trainable)

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The tensors to store: detached CPU clones of the selected base tensors."""
        return snapshot(self._targets)

    def load_values(self, values: Mapping[str, torch.Tensor]) -> None:
        """Write checked tensors (canonical names) into the base (used by ``load``)."""
        write_into(self._targets, values, values.keys())

    def detach(self) -> None:
        if not self.attached:
            return
        write_into(self._targets, self._originals, self._originals.keys())
        for n, p in self.model.named_parameters():
            p.grad = None
            p.requires_grad_(self._requires_grad.get(n, p.requires_grad))
        self._originals = {}
        self.attached = False


__all__ = ["BaseTensorAdapter", "base_tensors", "check_tensors", "snapshot", "write_into"]
