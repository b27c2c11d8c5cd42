"""Built-in plugin: the ``prefix-tuning`` method (additive PEFT).

Training side in :mod:`.method`, serving runtime in :mod:`.runtime`, the stored tensor
layout and PEFT mapping in :mod:`.layout`, a generic greedy decoder in :mod:`.decode`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adapterhub.plugins.prefix_tuning.config import PrefixTuningConfig
from adapterhub.plugins.prefix_tuning.method import PrefixAdapter, PrefixTuningMethod

from adapterhub.hookspecs import hookimpl

__all__ = ["PrefixAdapter", "PrefixTuningConfig", "PrefixTuningMethod", "adapterhub_register_methods"]


@hookimpl
def adapterhub_register_methods(register: Callable[[Any], None]) -> None:
    register(PrefixTuningMethod())
