"""adapterhub: train, evaluate, store and hot-swap PEFT adapters on one frozen base.

Heavy submodules (torch, transformers) are imported lazily so that ``adapterhub
plugins`` and friends start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from adapterhub.host import AdapterHost

_LAZY = {
    "AdapterHost": "adapterhub.host",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'adapterhub' has no attribute {name!r}")


__all__ = ["AdapterHost", "__version__"]
