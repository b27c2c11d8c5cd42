"""The prefix cache: finished requests' KV blocks, reused by later prompts that start alike.

A chat's turn ``n`` re-sends turns ``1..n-1`` verbatim, and many requests share a system
prompt or a few-shot preamble; prefilling those tokens again costs ~3 ms per token on a
CPU. The cache keeps the keys and values of every *full block* (``prefix_block_tokens``
tokens) of a request's prompt (when its prefill completes) and of its prompt plus answer
(when it finishes), and a new request starts its cache from the longest run of cached
blocks its prompt begins with, then prefills only the rest.

**Keyed by adapter version, never by name.** A block's key is a hash chain: block ``i``'s
key hashes block ``i - 1``'s key with block ``i``'s token ids, and block 0's "previous
key" is the *root* of the adapter that computed it: ``name@version`` plus the sha256 of
every file its manifest pins (for the bare base, the base's weight fingerprint). Keys and
values depend on every earlier token and on the adapter's weights, so a block is reused
only when the whole prefix up to it, and the adapter version, are the same. Two adapters,
or two versions of one, never share a block (vLLM #42125 and llama.cpp #26207 were bugs
of exactly that kind).

**Bounded.** Blocks share ``max_kv_tokens`` with running requests: the engine trims the
cache, least recently used first, to what running requests have not reserved. A reused
block is *copied* into the request's own cache, so evicting it never touches a request.

Runs on the engine thread only (no lock).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Block:
    """One block's keys and values ``(layers, kv_heads, block_tokens, head_dim)``."""

    keys: torch.Tensor
    values: torch.Tensor


def root_of(label: str, digests: Sequence[str]) -> bytes:
    """The root key of an adapter version (or the base): its label and content digests."""
    h = hashlib.sha256(b"adapterhub-prefix-cache-v1\0" + label.encode())
    for d in digests:
        h.update(b"\0" + d.encode())
    return h.digest()


class PrefixCache:
    """LRU blocks of KV keyed by a hash chain over (adapter root, token ids) (module docs)."""

    def __init__(self, block_tokens: int) -> None:
        self.block = block_tokens
        self._blocks: OrderedDict[bytes, Block] = OrderedDict()
        self.lookups = 0  # prompt tokens looked up
        self.hits = 0  # prompt tokens served from the cache
        self.evictions = 0  # blocks evicted

    @property
    def tokens(self) -> int:
        return len(self._blocks) * self.block

    def _chain(self, root: bytes, ids: Sequence[int], blocks: int) -> list[bytes]:
        keys, prev = [], root
        for i in range(blocks):
            chunk = ids[i * self.block : (i + 1) * self.block]
            prev = hashlib.sha256(prev + b"".join(int(t).to_bytes(4, "little", signed=False) for t in chunk)).digest()
            keys.append(prev)
        return keys

    def lookup(self, root: bytes, ids: Sequence[int], limit: int) -> list[Block]:
        """The cached blocks ``ids`` begins with (at most ``limit`` tokens), most recent use
        recorded; counts ``len(ids)`` looked-up tokens and the hits."""
        self.lookups += len(ids)
        found: list[Block] = []
        keys: list[bytes] = []
        for key in self._chain(root, ids, max(limit, 0) // self.block):
            block = self._blocks.get(key)
            if block is None:
                break
            keys.append(key)
            found.append(block)
        self._touch(keys)
        self.hits += len(found) * self.block
        return found

    def _touch(self, keys: Sequence[bytes]) -> None:
        """Mark a chain's blocks most recently used, its *first* block last: eviction then
        takes a chain's tail before its head (a block whose parent went can never be
        found again, so evicting heads first would waste the rest)."""
        for key in reversed(keys):
            if key in self._blocks:
                self._blocks.move_to_end(key)

    def insert(self, root: bytes, ids: Sequence[int], read: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]], budget: int) -> int:
        """Keep the full blocks of ``ids`` not cached yet; ``read(start, stop)`` gives their
        keys/values (copied here). Stays within ``budget`` tokens, evicting the least
        recently used blocks; returns how many blocks were added."""
        added = 0
        chain = self._chain(root, ids, len(ids) // self.block)
        self._touch(chain)  # what is cached already outlives other chains' blocks
        for i, key in enumerate(chain):
            if key in self._blocks:
                continue
            if not self.trim(budget - self.block):
                break
            k, v = read(i * self.block, (i + 1) * self.block)
            self._blocks[key] = Block(k.clone(), v.clone())
            added += 1
        self._touch(chain)
        return added

    def trim(self, budget: int) -> bool:
        """Evict least recently used blocks until at most ``budget`` tokens are cached;
        False when ``budget`` is negative (nothing can be kept)."""
        if budget < 0:
            self.clear()
            return False
        while self._blocks and self.tokens > budget:
            self._blocks.popitem(last=False)
            self.evictions += 1
        return True

    def clear(self) -> None:
        self.evictions += len(self._blocks)
        self._blocks.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "lookups": self.lookups,
            "hits": self.hits,
            "hit_rate": round(self.hits / self.lookups, 4) if self.lookups else 0.0,
            "tokens": self.tokens,
            "blocks": len(self._blocks),
            "evictions": self.evictions,
            "block_tokens": self.block,
        }
