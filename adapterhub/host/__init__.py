"""Hot-swap runtime: one frozen base model, a pool of adapters, per-row adapters.

Exports are resolved lazily so that importing ``adapterhub.serving.cli`` (a plugin module
loaded by every CLI invocation) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapterhub.refs import BASE

if TYPE_CHECKING:
    from adapterhub.host.host import AdapterHost, Generation

__all__ = ["BASE", "AdapterHost", "Generation"]


def __getattr__(name: str) -> Any:
    if name in ("AdapterHost", "Generation"):
        from adapterhub.host import host

        return getattr(host, name)
    raise AttributeError(f"module 'adapterhub.host' has no attribute {name!r}")
