"""Shared helpers for the prefix-tuning tests: tiny GQA Llamas and random prefixes."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from adapterhub.plugins.prefix_tuning import PrefixTuningMethod

from adapterhub.testing.models import tiny_llama


def make_model(seed: int = 0, **overrides: Any) -> Any:
    """The tiny seeded Llama (4 query heads, 2 kv heads, head_dim 16, 2 layers)."""
    return tiny_llama(seed=seed, **overrides)[0]


def smollm_shaped(seed: int = 0, **overrides: Any) -> Any:
    """SmolLM2's head layout scaled down: 9 query heads, 3 kv heads (head_dim 8), 3 layers."""
    return tiny_llama(seed=seed, hidden_size=72, num_attention_heads=9, num_key_value_heads=3,
                      num_hidden_layers=3, head_dim=8, **overrides)[0]


def random_prefix(model: Any, tokens: int, seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """A random prefix with realistic magnitude for ``model``'s geometry."""
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    shape = (cfg.num_hidden_layers, cfg.num_key_value_heads, tokens, cfg.head_dim)
    return {
        "prefix.key": torch.randn(shape, generator=gen) * scale,
        "prefix.value": torch.randn(shape, generator=gen) * scale,
    }


def left_pad(seqs: list[torch.Tensor], pad_id: int = 258) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad 1-d id tensors into (ids, mask)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = s
        mask[i, width - len(s):] = 1
    return ids, mask


@pytest.fixture
def method() -> PrefixTuningMethod:
    return PrefixTuningMethod()


@pytest.fixture
def model() -> Any:
    return make_model()


@pytest.fixture
def h() -> Any:
    """The helper functions above, for tests (conftest modules are not importable under importlib mode)."""

    class Helpers:
        make_model = staticmethod(make_model)
        smollm_shaped = staticmethod(smollm_shaped)
        random_prefix = staticmethod(random_prefix)
        left_pad = staticmethod(left_pad)

    return Helpers
