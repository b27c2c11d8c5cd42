"""The pages' login sessions: a random id in the cookie, the principal on the server.

The cookie never holds the token: a cookie is stored by the browser, sent on every
request, and shows up in proxies' and browsers' debugging tools, so it carries only
``secrets.token_urlsafe`` (an id that means nothing outside this process). The id maps
here to the token's principal (its name, globs; read scope only). Sessions live in
memory: a restart signs everyone out, which for a read-only convenience login is the
right trade against keeping secrets-equivalent state on disk. The table is bounded (the
oldest session is dropped past :data:`MAX_SESSIONS`) and every entry expires with the
cookie's ``max_age``, so nothing grows without bound.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import replace

from .tokens import COOKIE, HubPrincipal

__all__ = ["COOKIE", "MAX_SESSIONS", "SESSION_TTL_S", "Sessions"]
SESSION_TTL_S = 7 * 86400
"""A session's lifetime, and its cookie's ``max_age``."""
MAX_SESSIONS = 10_000
_ID_BYTES = 32
_MAX_ID_CHARS = 64  # token_urlsafe(32) is 43 characters; anything longer is not ours


class Sessions:
    """Session id → (principal with read scope, expiry), bounded and expiring."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, max_sessions: int = MAX_SESSIONS) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._by_id: OrderedDict[str, tuple[HubPrincipal, float]] = OrderedDict()
        self._lock = threading.Lock()  # handlers run on the loop, tests and tools from threads

    def create(self, who: HubPrincipal) -> str:
        sid = secrets.token_urlsafe(_ID_BYTES)
        with self._lock:
            self._by_id[sid] = (replace(who, scope="read"), time.monotonic() + self.ttl_s)
            while len(self._by_id) > self.max_sessions:
                self._by_id.popitem(last=False)  # the oldest login goes first
        return sid

    def lookup(self, sid: str | None) -> HubPrincipal | None:
        """The session's principal; None for no, unknown, forged or expired ids."""
        if not sid or len(sid) > _MAX_ID_CHARS:
            return None
        with self._lock:
            found = self._by_id.get(sid)
            if found is None:
                return None
            who, expires = found
            if time.monotonic() >= expires:
                del self._by_id[sid]
                return None
            return who

    def delete(self, sid: str | None) -> None:
        if sid:
            with self._lock:
                self._by_id.pop(sid, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_id)
