"""Trainer tests: tiny models, one torch thread.

On a 2-core machine shared by many processes, two intra-op threads on matrices this
small spend their time spinning: one thread runs these tests ~20x faster.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from adapterhub.testing.fixtures import tiny_base, tiny_model  # noqa: F401  (fixtures)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
