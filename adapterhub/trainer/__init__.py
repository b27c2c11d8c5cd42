"""Instruction fine-tuning: data → method adapter → artifact (see ``docs/training.md``).

``from adapterhub.trainer import train`` is the Python API; ``adapterhub train`` the CLI
(registered by :mod:`adapterhub.trainer.cli`). Submodules are imported lazily so that
importing :mod:`adapterhub.trainer.templates` (the host does) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapterhub.trainer.loop import TrainConfig, TrainResult, train

_LAZY = {"train": "adapterhub.trainer.loop", "TrainResult": "adapterhub.trainer.loop", "TrainConfig": "adapterhub.trainer.loop"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'adapterhub.trainer' has no attribute {name!r}")


__all__ = ["TrainConfig", "TrainResult", "train"]
