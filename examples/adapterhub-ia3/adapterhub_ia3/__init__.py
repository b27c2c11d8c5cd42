"""adapterhub-ia3: the IA³ method as a third-party adapterhub plugin.

The whole integration is this module and one entry point in ``pyproject.toml``::

    [project.entry-points.adapterhub]
    ia3 = "adapterhub_ia3"

adapterhub imports the module, finds the ``@hookimpl`` function below and calls it with
a ``register`` callback; from then on ``adapterhub train --method ia3``, the artifact
format, the registry and ``AdapterHost`` hot-swapping work with no change to adapterhub.
"""

from __future__ import annotations

from collections.abc import Callable

from adapterhub.hookspecs import hookimpl
from adapterhub.protocols.method import Method
from adapterhub_ia3.method import IA3Adapter, IA3Config, IA3Method
from adapterhub_ia3.runtime import IA3Runtime

__version__ = "0.1.0"
__all__ = ["IA3Adapter", "IA3Config", "IA3Method", "IA3Runtime"]


@hookimpl
def adapterhub_register_methods(register: Callable[[Method], None]) -> None:
    register(IA3Method())
