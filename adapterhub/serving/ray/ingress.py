"""The Starlette app of ``adapterhub serve`` over a :class:`RayEngine`, plus the
per-replica metrics (the only addition a client or a scraper can see)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapterhub.serving.http.app import create_app
from adapterhub.serving.ray.metrics import ReplicaCollector

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from adapterhub.serving.ray.client import RayEngine


def create_ray_app(engine: RayEngine, **kwargs: Any) -> Starlette:
    app = create_app(engine, **kwargs)
    app.state.server.metrics.registry.register(ReplicaCollector(engine))
    return app
