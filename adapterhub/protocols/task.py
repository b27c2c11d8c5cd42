"""Task packs: real prompt–completion data with splits, a template and evaluators."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Split = Literal["train", "validation", "test"]


@dataclass(frozen=True)
class Example:
    """One instruction example. ``references`` defaults to ``(completion,)``."""

    prompt: str
    completion: str
    references: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def refs(self) -> tuple[str, ...]:
        return self.references or (self.completion,)


@runtime_checkable
class TaskPack(Protocol):
    """A named task: ``load(split)`` returns deterministic examples (seeded split)."""

    name: str
    description: str
    evaluators: tuple[str, ...]
    """Evaluator names run by ``adapterhub eval`` on this task (first is the headline)."""
    max_new_tokens: int
    """Generation length used when evaluating this task."""

    def load(self, split: Split) -> list[Example]:
        """Examples of the split; raise MissingPackageError if the data package is absent."""
        ...

    def data_hash(self, split: Split) -> str:
        """sha256 over the split's examples (recorded in manifests and eval caches)."""
        ...
