"""Built-in plugin: the ``full`` method (kind ``full``), full fine-tuning as the baseline.

Every weight trains; the artifact stores the whole state dict, and
:func:`export_model_dir` writes it out as a standard transformers model directory.
Not hot-swappable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from adapterhub.plugins.full.export import export_model_dir
from adapterhub.plugins.full.method import METHOD, FullAdapter, FullConfig, FullMethod

from adapterhub.hookspecs import hookimpl

if TYPE_CHECKING:
    from adapterhub.protocols import Method


@hookimpl
def adapterhub_register_methods(register: Callable[[Method], None]) -> None:
    register(METHOD)


__all__ = ["METHOD", "FullAdapter", "FullConfig", "FullMethod", "adapterhub_register_methods", "export_model_dir"]
