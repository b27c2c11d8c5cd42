"""What every route shares: the engine, the base alias, the keys, the metrics, and the
authentication and ``model`` resolution that come before any route's own work."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request as HttpRequest

from adapterhub.access import LoopLag
from adapterhub.refs import is_base
from adapterhub.serving.http.errors import ApiError, not_found
from adapterhub.serving.http.keys import ANONYMOUS, KeyRing, Principal
from adapterhub.serving.http.metrics import Metrics

if TYPE_CHECKING:
    from adapterhub.serving.http.backend import EngineLike


DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
"""4 MiB: a 100,000-token prompt is about 0.5 MB of JSON; anything larger is abuse."""
DEFAULT_BODY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class HttpLimits:
    """What one HTTP request may cost before the engine sees it (flags of ``serve``)."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Larger bodies get 413, before they are read past the cap (``--max-body-bytes``)."""
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    """A body must arrive within this many seconds of the headers, else 408 (``--body-timeout``)."""


@dataclass
class ServerState:
    engine: EngineLike
    base_alias: str
    keys: KeyRing | None = None
    registry_url: str | None = None
    limits: HttpLimits = field(default_factory=HttpLimits)
    metrics: Metrics = field(init=False)
    lag: LoopLag = field(default_factory=LoopLag)
    draining: bool = False
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.engine.stats)
        self.lag.observers.append(self.metrics.loop_lag.observe)

    def is_base(self, model: str) -> bool:
        return is_base(model, self.base_alias)

    def principal(self, request: HttpRequest) -> Principal:
        """The caller's key (anonymous without a keys file); 401 for a missing/wrong key."""
        if self.keys is None:
            return ANONYMOUS
        p = self.keys.authenticate(request.headers.get("authorization"))
        if p is None:
            raise ApiError(401, "missing or invalid API key (send Authorization: Bearer <key>)",
                           "authentication_error", "invalid_api_key")
        return p

    def adapter_for(self, principal: Principal, model: Any) -> str | None:
        """The adapter reference ``model`` names (None for the base); 404 when the key may
        not use it, the same answer as for an adapter that does not exist."""
        if not isinstance(model, str) or not model.strip():
            raise ApiError(400, "invalid model: expected a string", param="model")
        if self.is_base(model):
            return None
        if not principal.allows(model):
            raise not_found(model)
        return model
