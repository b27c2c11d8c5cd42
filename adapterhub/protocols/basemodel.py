"""Base-model sources: named aliases that load a (model, tokenizer) pair offline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass
class LoadedBase:
    """A loaded base model. ``name`` is the spec it was resolved from."""

    name: str
    model: Any  # transformers PreTrainedModel (kept Any: transformers is heavy to type)
    tokenizer: Any
    path: str | None = None
    """Local directory of the safetensors model, when there is one."""


@runtime_checkable
class BaseModelSource(Protocol):
    """A registered base-model alias (``--base smollm2-135m-instruct``)."""

    name: str
    description: str

    def available(self) -> tuple[bool, str]:
        """(usable offline now?, reason or location) — shown by ``adapterhub models``."""
        ...

    def local_dir(self) -> str:
        """Materialise the model as a safetensors directory (cached; atomic) and return it."""
        ...
