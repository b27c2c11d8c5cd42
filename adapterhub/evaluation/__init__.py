"""Evaluation: scoring, batched greedy generation, the task harness, forgetting reports.

Import-light on purpose: ``adapterhub score`` must not pay for torch. Heavy pieces load
on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "resolve_evaluator": "adapterhub.evaluation.scoring",
    "score_texts": "adapterhub.evaluation.scoring",
    "score_files": "adapterhub.evaluation.scoring",
    "read_predictions": "adapterhub.evaluation.scoring",
    "read_references": "adapterhub.evaluation.scoring",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'adapterhub.evaluation' has no attribute {name!r}")


__all__ = sorted(_LAZY)
