"""The small public protocols that registered plugin objects implement.

Hooks (``adapterhub.hookspecs``) *find* these objects; the objects *do* the work.
Each protocol lives in its own module with one owner; this package re-exports them.
"""

from adapterhub.protocols.basemodel import BaseModelSource, LoadedBase
from adapterhub.protocols.command import Command
from adapterhub.protocols.evaluator import EvalResult, Evaluator, EvaluatorContext
from adapterhub.protocols.method import (
    Capabilities,
    Method,
    MethodConfig,
    MethodKind,
    MethodRuntime,
    SwapPlan,
    TrainableAdapter,
)
from adapterhub.protocols.store import Store, StoreFactory
from adapterhub.protocols.task import Example, TaskPack

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
    "Store",
    "StoreFactory",
    "SwapPlan",
    "TaskPack",
    "TrainableAdapter",
]
