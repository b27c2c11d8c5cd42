"""What one hub process holds: the store it serves, its query cache, tokens and sessions.

Nothing here is authoritative: the store is. The cache is rebuilt from the store, the
tokens file is read once at start-up, and login sessions live only in memory.

Writes go through :attr:`HubState.registry` (the same :class:`Registry` calls
``adapterhub push`` makes), never through the store below it, so a hub over the local
registry keeps its search index and pending markers exactly as the CLI does. They run
on one writer thread: the index's SQLite connection belongs to the thread that uses it,
and manifest and tag writes are small, so one thread serialises them at no real cost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from adapterhub.registry.client import Registry

from adapterhub.protocols.store import Store

from .query import QueryCache
from .sessions import Sessions

if TYPE_CHECKING:
    from adapterhub.registry.trust import TrustPolicy

    from .tokens import TokenRing

T = TypeVar("T")


@dataclass
class HubState:
    store: Store
    cache: QueryCache
    tokens: TokenRing | None = None
    """None: no tokens file — read-only, and anyone who can connect may read."""
    validate: bool = True
    """Check a pushed version like ``adapterhub push`` does before it becomes visible (422
    if not). Off only for the store conformance suite, which stores raw non-manifest bytes."""
    max_blob_bytes: int = 16 * 1024**3
    """The largest blob a push may upload through the API (413 above)."""
    title: str = "adapterhub"
    public_url: str | None = None
    """The address clients use (for the snippets on adapter pages); default: the request's."""
    extra: dict[str, object] = field(default_factory=dict)
    registry: Registry | None = None
    """The client every write goes through; default: one whose default target is ``store``."""
    sessions: Sessions = field(default_factory=Sessions)
    trust: TrustPolicy | None = None
    """``hub --trust``: the keys signatures are judged against (re-read when the file changes)."""
    require_signed: bool = False
    """``hub --require-signed``: a manifest download of a version no trusted key signed is a 422."""
    _writer: ThreadPoolExecutor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.registry is None:
            self.registry = Registry.for_store(self.store)

    @property
    def client(self) -> Registry:
        assert self.registry is not None  # set by __post_init__
        return self.registry

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a registry write on the hub's one writer thread (never on the event loop)."""
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-writer")
        return await asyncio.get_running_loop().run_in_executor(self._writer, partial(fn, *args))

    @classmethod
    def open(cls, store: Store, *, tokens: TokenRing | None = None, validate: bool = True, ttl_s: float = 30.0,
             registry: Registry | None = None) -> HubState:
        return cls(store=store, cache=QueryCache(store, ttl_s=ttl_s), tokens=tokens, validate=validate, registry=registry)
