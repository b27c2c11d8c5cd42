"""A method's kind and capabilities: plain values, importable without pydantic or torch.

Re-exported by :mod:`adapterhub.protocols.method`. They live apart so a method plugin
can declare what it is (see :class:`adapterhub.lazy.LazyMethod`) while every command
that never trains or serves stays cheap to start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MethodKind = Literal["reparameterization", "additive", "selective", "full"]


@dataclass(frozen=True)
class Capabilities:
    """What the host may do with a method's adapters."""

    hot_swap: bool
    """Adapters can be made resident and switched on a frozen base at inference."""
    mixed_batch: bool
    """Rows with different adapters of this method can share one forward pass."""
    merge: bool = False
    """The adapter can be merged into base weights (and unmerged)."""


__all__ = ["Capabilities", "MethodKind"]
