"""Built-in ``lora`` method plugin (registered through the same hook as third-party ones)."""

from __future__ import annotations

from collections.abc import Callable

from adapterhub.plugins.lora.config import LoraConfig
from adapterhub.plugins.lora.method import LoraAdapter, LoraMethod
from adapterhub.plugins.lora.runtime import LoraRuntime

from adapterhub.hookspecs import hookimpl
from adapterhub.protocols.method import Method

__all__ = ["LoraAdapter", "LoraConfig", "LoraMethod", "LoraRuntime"]


@hookimpl
def adapterhub_register_methods(register: Callable[[Method], None]) -> None:
    register(LoraMethod())
