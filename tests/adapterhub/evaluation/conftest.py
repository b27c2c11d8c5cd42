"""Fixtures for the evaluation tests: one torch thread, tiny bases, in-memory task packs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from adapterhub.plugins.tasks._common import examples_sha256

from adapterhub.protocols.basemodel import LoadedBase
from adapterhub.protocols.task import Example
from adapterhub.testing.models import tiny_llama


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # 2 intra-op threads on a busy 2-core box spin instead of working (27 s vs 1 s for
    # a tiny fit); these tests move tiny tensors, one thread is fastest.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ADAPTERHUB_HOME (registry and eval cache) per test."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("ADAPTERHUB_HOME", str(h))
    return h


@pytest.fixture
def tiny() -> LoadedBase:
    model, tok = tiny_llama(seed=0)
    return LoadedBase(name="tiny-random-llama", model=model, tokenizer=tok)


class MemoryTask:
    """A real TaskPack over in-memory examples (for tests that need exact references)."""

    def __init__(self, name: str, examples: list[Example], evaluators: tuple[str, ...] = ("exact_match",), max_new_tokens: int = 6) -> None:
        self.name = name
        self.description = "in-memory test task"
        self.evaluators = evaluators
        self.max_new_tokens = max_new_tokens
        self._examples = examples

    def load(self, split: str) -> list[Example]:
        return list(self._examples)

    def data_hash(self, split: str) -> str:
        return examples_sha256(self._examples)


@pytest.fixture
def memory_task() -> Callable[..., Any]:
    return MemoryTask


