"""What one hub process holds: the store it serves, its query cache and its tokens.

Nothing here is authoritative: the store is. The cache is rebuilt from the store, and
the tokens file is read once at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from adapterhub.protocols.store import Store

from .query import QueryCache

if TYPE_CHECKING:
    from .tokens import TokenRing


@dataclass
class HubState:
    store: Store
    cache: QueryCache
    tokens: TokenRing | None = None
    """None: no tokens file — read-only, and anyone who can connect may read."""
    validate: bool = True
    """Check a pushed manifest like every client does before it becomes visible (422 if
    not). Off only for the store conformance suite, which stores raw non-manifest bytes."""
    max_blob_bytes: int = 16 * 1024**3
    """The largest blob a push may upload through the API (413 above)."""
    title: str = "adapterhub"
    public_url: str | None = None
    """The address clients use (for the snippets on adapter pages); default: the request's."""
    extra: dict[str, object] = field(default_factory=dict)

    @classmethod
    def open(cls, store: Store, *, tokens: TokenRing | None = None, validate: bool = True, ttl_s: float = 30.0) -> HubState:
        return cls(store=store, cache=QueryCache(store, ttl_s=ttl_s), tokens=tokens, validate=validate)
