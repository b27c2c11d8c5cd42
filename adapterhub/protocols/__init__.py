"""The small public protocols that registered plugin objects implement.

Hooks (``adapterhub.hookspecs``) *find* these objects; the objects *do* the work.
Each protocol lives in its own module with one owner; this package re-exports them,
importing each module on first access: ``adapterhub.protocols.command`` or ``.task``
must not pay for pydantic (``method``) when a light command starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapterhub.lazy import lazy_exports

if TYPE_CHECKING:
    from adapterhub.protocols.basemodel import BaseModelSource, LoadedBase
    from adapterhub.protocols.capabilities import Capabilities, MethodKind
    from adapterhub.protocols.command import Command
    from adapterhub.protocols.evaluator import EvalResult, Evaluator, EvaluatorContext
    from adapterhub.protocols.method import (
        Method,
        MethodConfig,
        MethodRuntime,
        PackedRuntime,
        SwapPlan,
        TokenSpan,
        TrainableAdapter,
    )
    from adapterhub.protocols.store import Store, StoreFactory
    from adapterhub.protocols.task import Example, TaskPack

_MODULES = {
    "basemodel": ("BaseModelSource", "LoadedBase"),
    "capabilities": ("Capabilities", "MethodKind"),
    "command": ("Command",),
    "evaluator": ("EvalResult", "Evaluator", "EvaluatorContext"),
    "method": ("Method", "MethodConfig", "MethodRuntime", "PackedRuntime", "SwapPlan", "TokenSpan", "TrainableAdapter"),
    "store": ("Store", "StoreFactory"),
    "task": ("Example", "TaskPack"),
}

__getattr__ = lazy_exports(__name__, {name: f"{__name__}.{mod}" for mod, names in _MODULES.items() for name in names})

__all__ = [
    "BaseModelSource",
    "Capabilities",
    "Command",
    "EvalResult",
    "Evaluator",
    "EvaluatorContext",
    "Example",
    "LoadedBase",
    "Method",
    "MethodConfig",
    "MethodKind",
    "MethodRuntime",
    "PackedRuntime",
    "Store",
    "StoreFactory",
    "SwapPlan",
    "TaskPack",
    "TokenSpan",
    "TrainableAdapter",
]
