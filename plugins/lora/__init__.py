"""Built-in ``lora`` method plugin (registered through the same hook as third-party ones).

The package imports no torch: it registers a :class:`~adapterhub.lazy.LazyMethod`
whose config (:mod:`.config`) and implementation (:mod:`.method`, :mod:`.runtime`) load
on first use; the names below are imported on first access.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from adapterhub.hookspecs import hookimpl
from adapterhub.lazy import LazyMethod, lazy_exports
from adapterhub.protocols.capabilities import Capabilities

if TYPE_CHECKING:
    from adapterhub.plugins.lora.config import LoraConfig
    from adapterhub.plugins.lora.method import LoraAdapter, LoraMethod
    from adapterhub.plugins.lora.runtime import LoraRuntime

    from adapterhub.protocols.method import Method

__all__ = ["LoraAdapter", "LoraConfig", "LoraMethod", "LoraRuntime", "lazy_method"]

__getattr__ = lazy_exports(
    __name__,
    {
        "LoraAdapter": "adapterhub.plugins.lora.method",
        "LoraConfig": "adapterhub.plugins.lora.config",
        "LoraMethod": "adapterhub.plugins.lora.method",
        "LoraRuntime": "adapterhub.plugins.lora.runtime",
    },
)


TRAINING_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "note": "best held-out loss of 2e-4/1e-3/3e-3 in 30-step SmolLM2-135M runs on sentiment-rt (r=8 q/v); 2e-4 lags far behind (benchmarks/results/forgetting_mix-lr_sweep.md)",
}
"""Recommended training settings (``Method.training_defaults``). A plain dict here, set on
the lazy method too, so ``adapterhub methods`` shows it without importing torch."""


def _with_defaults(method: LazyMethod) -> LazyMethod:
    method.__dict__["training_defaults"] = dict(TRAINING_DEFAULTS)
    return method


def lazy_method() -> LazyMethod:
    """The ``lora`` method as registered: metadata now, code on first use."""
    return _with_defaults(LazyMethod(
        name="lora",
        kind="reparameterization",
        description="LoRA: trainable low-rank updates B·A on selected linear layers; mergeable, hot-swappable, mixed batches",
        capabilities=Capabilities(hot_swap=True, mixed_batch=True, merge=True),
        implementation="adapterhub.plugins.lora.method:LoraMethod",
        config="adapterhub.plugins.lora.config:LoraConfig",
    ))



@hookimpl
def adapterhub_register_methods(register: Callable[[Method], None]) -> None:
    register(lazy_method())
