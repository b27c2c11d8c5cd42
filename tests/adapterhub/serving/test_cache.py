"""The decode group's KV layout (``adapterhub.serving.cache.SlotCache``).

Rows join with caches of any length, leave in any order, and the columns run out and
are re-packed; through all of it every live row must see exactly its own keys, in
order, and nothing else (the mask hides the rest).
"""

from __future__ import annotations

import random

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import DynamicCache

from adapterhub.serving.cache import SlotCache

LAYERS, HEADS, DIM = 2, 1, 2


def _prefill(tag: float, length: int) -> DynamicCache:
    cache = DynamicCache()
    for layer in range(LAYERS):
        k = torch.full((1, HEADS, length, DIM), tag) + torch.arange(length).view(1, 1, -1, 1) * 1e-3
        cache.update(k, -k, layer)
    return cache


def _visible(cache: SlotCache, row: int) -> list[float]:
    """The key values row ``row`` attends to in the next single-token forward."""
    mask = cache.step_mask(1, torch.float32)[row, 0, 0]
    keys = cache.keys[0][row, 0, cache.start : cache.end + 1, 0]
    return [round(float(k), 4) for k, m in zip(keys, mask, strict=True) if m == 0]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_rows_see_only_their_own_keys(seed: int) -> None:
    rng = random.Random(seed)
    cache = SlotCache(LAYERS, HEADS, DIM, dtype=torch.float32, device=torch.device("cpu"))
    live: list[tuple[float, list[float]]] = []  # per row: tag, keys it must see
    tag = 1.0
    for _ in range(40):
        action = rng.random()
        if action < 0.35 or not live:
            length = rng.randint(1, 90)
            cache.add_row(_prefill(tag, length), torch.ones(length))
            live.append((tag, [round(tag + i * 1e-3, 4) for i in range(length)]))
            tag += 1.0
        elif action < 0.55:
            i = rng.randrange(len(live))
            moved = cache.remove_row(i)
            last = live.pop()
            if moved is not None:
                live[i] = last
        else:  # one decode step: every row appends a key of its own
            cache.reserve(1)
            n = cache.rows
            k = torch.tensor([t + 0.5 for t, _ in live]).view(n, 1, 1, 1).expand(n, HEADS, 1, DIM)
            cache.step_mask(1, torch.float32)
            for layer in range(LAYERS):
                cache.update(k, -k, layer)
            cache.advance(1)
            for t, keys in live:
                keys.append(round(t + 0.5, 4))
        assert cache.rows == len(live)
        for r, (_, keys) in enumerate(live):
            # The key appended by the next step is not written yet: compare what is there.
            assert _visible(cache, r)[: len(keys)] == keys
            assert cache.values[1][r, 0, cache.end - len(keys) : cache.end, 0].neg().sub(torch.tensor(keys)).abs().max() < 1e-3


def test_update_returns_the_window_and_writes_in_place() -> None:
    cache = SlotCache(LAYERS, HEADS, DIM, dtype=torch.float32, device=torch.device("cpu"))
    cache.add_row(_prefill(1.0, 5), torch.ones(5))
    cache.add_row(_prefill(2.0, 3), torch.ones(3))
    storage = cache.keys[0].data_ptr()
    cache.reserve(1)
    k = torch.full((2, HEADS, 1, DIM), 9.0)
    window_k, _ = cache.update(k, k, 0)
    assert window_k.shape == (2, HEADS, 6, DIM)  # 5 columns of history + the new one
    assert cache.keys[0].data_ptr() == storage  # appended in place: no copy of the cache
    mask = cache.step_mask(1, torch.float32)
    assert (mask[1, 0, 0, :2] < -1e30).all() and (mask[1, 0, 0, 2:] == 0).all()  # row 1 starts later


def test_prefix_slots_masked_out_stay_masked() -> None:
    cache = SlotCache(LAYERS, HEADS, DIM, dtype=torch.float32, device=torch.device("cpu"))
    cache.add_row(_prefill(1.0, 6), torch.tensor([1, 1, 0, 0, 1, 1]))  # 2 prefix slots unused
    mask = cache.step_mask(1, torch.float32)[0, 0, 0]
    assert [bool(m == 0) for m in mask] == [True, True, False, False, True, True, True]
