"""Built-in plugin: the ``full`` method (kind ``full``), full fine-tuning as the baseline.

Every weight trains; the artifact stores the whole state dict, and
:func:`export_model_dir` writes it out as a standard transformers model directory.
Not hot-swappable.

The package imports no torch: ``METHOD`` is a :class:`~adapterhub.lazy.LazyMethod`
whose config (:mod:`.config`) and implementation (:mod:`.method`) load on first use;
the other names below are imported on first access.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from adapterhub.hookspecs import hookimpl
from adapterhub.lazy import LazyMethod, lazy_exports
from adapterhub.protocols.capabilities import Capabilities

if TYPE_CHECKING:
    from adapterhub.plugins.full.config import FullConfig
    from adapterhub.plugins.full.export import export_model_dir
    from adapterhub.plugins.full.method import FullAdapter, FullMethod

    from adapterhub.protocols import Method

TRAINING_DEFAULTS: dict[str, Any] = {
    "lr": 1e-5,
    "note": "30-step SmolLM2-135M runs on sentiment-rt: 5e-6 and 2e-5 close (0.254 vs 0.269 held-out loss), 1e-4 worse (0.301, overfits); the default sits between the two best",
}
"""Recommended training settings (``Method.training_defaults``). A plain dict here, set on
the lazy method too, so ``adapterhub methods`` shows it without importing torch."""


def _with_defaults(method: LazyMethod) -> LazyMethod:
    method.__dict__["training_defaults"] = dict(TRAINING_DEFAULTS)
    return method


METHOD = _with_defaults(LazyMethod(
    name="full",
    kind="full",
    description="full fine-tuning: every weight trains (baseline; exported as a model directory)",
    capabilities=Capabilities(hot_swap=False, mixed_batch=False, merge=False),
    implementation="adapterhub.plugins.full.method:METHOD",
    config="adapterhub.plugins.full.config:FullConfig",
))

__getattr__ = lazy_exports(
    __name__,
    {
        "FullAdapter": "adapterhub.plugins.full.method",
        "FullConfig": "adapterhub.plugins.full.config",
        "FullMethod": "adapterhub.plugins.full.method",
        "export_model_dir": "adapterhub.plugins.full.export",
    },
)


@hookimpl
def adapterhub_register_methods(register: Callable[[Method], None]) -> None:
    register(METHOD)


__all__ = ["METHOD", "FullAdapter", "FullConfig", "FullMethod", "adapterhub_register_methods", "export_model_dir"]
