"""Built-in plugin: the ``layer-selective`` method (kind ``selective``).

Trains only base parameters chosen by :mod:`adapterhub.selector` (layer range, module
pattern, parameter kind); the adapter stores exactly those tensors and is hot-swapped by
copying them into the base for the rows that use it (see ``runtime``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from adapterhub.plugins.layer_select.method import (
    METHOD,
    LayerSelectiveConfig,
    LayerSelectiveMethod,
    SelectiveAdapter,
)

from adapterhub.hookspecs import hookimpl

if TYPE_CHECKING:
    from adapterhub.protocols import Method


@hookimpl
def adapterhub_register_methods(register: Callable[[Method], None]) -> None:
    register(METHOD)


__all__ = ["METHOD", "LayerSelectiveConfig", "LayerSelectiveMethod", "SelectiveAdapter", "adapterhub_register_methods"]
