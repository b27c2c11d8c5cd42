"""Built-in base-model sources: ``smollm2-135m-instruct`` (default) and ``tiny-random-llama``.

Both materialise an ordinary safetensors model directory in
``adapterhub.paths.model_cache_dir()`` (atomically, once) that
``adapterhub.basemodels.load_base`` then loads in about a second.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from adapterhub.plugins.models.smollm2 import SmolLM2Source
from adapterhub.plugins.models.tiny import TinyRandomLlamaSource

from adapterhub.hookspecs import hookimpl

if TYPE_CHECKING:
    from adapterhub.protocols.basemodel import BaseModelSource

DEFAULT_BASE = SmolLM2Source.name


@hookimpl
def adapterhub_register_base_models(register: Callable[[BaseModelSource], None]) -> None:
    register(SmolLM2Source())
    register(TinyRandomLlamaSource())


__all__ = ["DEFAULT_BASE", "SmolLM2Source", "TinyRandomLlamaSource", "adapterhub_register_base_models"]
