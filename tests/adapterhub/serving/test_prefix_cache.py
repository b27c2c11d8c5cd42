"""The prefix cache on its own: keyed by adapter root and every earlier token, LRU under a budget."""

from __future__ import annotations

import torch

from adapterhub.serving.prefix_cache import PrefixCache, root_of

B = 4  # tokens per block


def _kv(ids: list[int]):
    """A fake per-position KV reader: each position's value is its token id (so a block's
    contents show which tokens it came from)."""
    t = torch.tensor(ids, dtype=torch.float32).view(1, 1, -1, 1)

    def read(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        return t[:, :, a:b], -t[:, :, a:b]

    return read


def test_blocks_are_found_only_under_the_same_root_and_the_same_earlier_tokens() -> None:
    cache = PrefixCache(B)
    a1, a2, b1 = root_of("t/a@1.0.0", ["0" * 64]), root_of("t/a@2.0.0", ["1" * 64]), root_of("t/b@1.0.0", ["0" * 64])
    ids = list(range(10, 22))  # 12 tokens: 3 blocks
    assert cache.insert(a1, ids, _kv(ids), budget=1000) == 3
    got = cache.lookup(a1, ids, limit=len(ids))
    assert [b.keys.flatten().tolist() for b in got] == [ids[0:4], ids[4:8], ids[8:12]]
    assert [b.values.flatten().tolist() for b in got] == [[-x for x in ids[i : i + 4]] for i in (0, 4, 8)]
    # Another version, another adapter: nothing, whatever the tokens.
    assert cache.lookup(a2, ids, limit=len(ids)) == [] and cache.lookup(b1, ids, limit=len(ids)) == []
    # A different first block makes every later block a miss too (the key chains).
    other = [99, *ids[1:]]
    assert cache.lookup(a1, other, limit=len(other)) == []
    # A shared start: the blocks up to where the prompts part.
    fork = ids[:8] + [7, 7, 7, 7]
    assert len(cache.lookup(a1, fork, limit=len(fork))) == 2


def test_the_limit_and_partial_blocks() -> None:
    cache = PrefixCache(B)
    root = root_of("<base>", ["f" * 64])
    ids = list(range(9))  # 2 full blocks and one token
    assert cache.insert(root, ids, _kv(ids), budget=100) == 2
    assert len(cache.lookup(root, ids, limit=len(ids) - 1)) == 2
    assert len(cache.lookup(root, ids[:8], limit=7)) == 1  # the last token is always computed
    st = cache.stats()
    assert st["lookups"] == 9 + 8 and st["hits"] == 8 + 4 and st["tokens"] == 8 and st["blocks"] == 2


def test_lru_eviction_keeps_within_the_budget() -> None:
    cache = PrefixCache(B)
    r = root_of("<base>", ["f" * 64])
    first, second = list(range(8)), list(range(100, 108))
    cache.insert(r, first, _kv(first), budget=8)
    assert cache.insert(r, second, _kv(second), budget=12) == 2
    assert cache.tokens == 12 and cache.stats()["evictions"] == 1
    # The least recently used chain lost its *tail*: its head is still a hit.
    assert len(cache.lookup(r, first, limit=8)) == 1
    assert len(cache.lookup(r, second, limit=8)) == 2
    assert cache.trim(4) and cache.tokens == 4
    assert len(cache.lookup(r, second, limit=8)) == 1  # the most recent head survives
    assert not cache.trim(-1) and cache.tokens == 0


def test_inserted_blocks_are_copies() -> None:
    cache = PrefixCache(B)
    r = root_of("<base>", ["f" * 64])
    store = torch.arange(8, dtype=torch.float32).view(1, 1, 8, 1)
    cache.insert(r, list(range(8)), lambda a, b: (store[:, :, a:b], store[:, :, a:b]), budget=100)
    store.zero_()  # the request's own cache is reused for another request
    assert cache.lookup(r, list(range(8)), limit=8)[1].keys.flatten().tolist() == [4.0, 5.0, 6.0, 7.0]
