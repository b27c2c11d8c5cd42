"""Built-in plugin: the ``layer-selective`` method (kind ``selective``).

Trains only base parameters chosen by :mod:`adapterhub.selector` (layer range, module
pattern, parameter kind); the adapter stores exactly those tensors and is hot-swapped by
copying them into the base for the rows that use it (see ``runtime``).

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
    from adapterhub.plugins.layer_select.config import LayerSelectiveConfig
    from adapterhub.plugins.layer_select.method import LayerSelectiveMethod, SelectiveAdapter

    from adapterhub.protocols import Method

TRAINING_DEFAULTS: dict[str, Any] = {
    "lr": 2e-3,
    "note": "for the default selection (norm weights only): best of 2e-4/2e-3/1e-2 in 30-step SmolLM2-135M runs on sentiment-rt. Selecting whole weight matrices (layers=, modules=) behaves like full fine-tuning: pass --lr 1e-5..1e-4",
}
"""Recommended training settings (``Method.training_defaults``). A plain dict here, set on
the lazy method too, so ``adapterhub methods`` shows it without importing torch."""


def _with_defaults(method: LazyMethod) -> LazyMethod:
    method.__dict__["training_defaults"] = dict(TRAINING_DEFAULTS)
    return method


METHOD = _with_defaults(LazyMethod(
    name="layer-selective",
    kind="selective",
    description="train chosen base parameters only (layer range, module pattern, kind: bias, norm, ...)",
    capabilities=Capabilities(hot_swap=True, mixed_batch=False, merge=False),
    implementation="adapterhub.plugins.layer_select.method:METHOD",
    config="adapterhub.plugins.layer_select.config:LayerSelectiveConfig",
))

__getattr__ = lazy_exports(
    __name__,
    {
        "LayerSelectiveConfig": "adapterhub.plugins.layer_select.config",
        "LayerSelectiveMethod": "adapterhub.plugins.layer_select.method",
        "SelectiveAdapter": "adapterhub.plugins.layer_select.method",
    },
)


@hookimpl
def adapterhub_register_methods(register: Callable[[Method], None]) -> None:
    register(METHOD)


__all__ = ["METHOD", "LayerSelectiveConfig", "LayerSelectiveMethod", "SelectiveAdapter", "adapterhub_register_methods"]
