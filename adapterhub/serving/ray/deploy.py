"""The application for ``serve deploy`` / a KubeRay RayService (docs/serving-ray.md):

.. code-block:: yaml

    applications:
      - name: adapterhub
        route_prefix: /
        import_path: adapterhub.serving.ray.deploy:build
        args: {base: smollm2-135m-instruct, registry: "s3://adapters/prod", replicas: 2}

Two deployments: ``adapterhub-ingress`` runs the Starlette app of ``adapterhub serve``
behind Serve's HTTP proxy, over a :class:`RayEngine` whose handle reaches
``adapterhub-engine``, the engine replicas. ``args`` are ``serve``'s flags with ``_`` for
``-`` (:data:`ARGS`); unknown ones are refused, as a typo on the command line is.
"""

from __future__ import annotations

import argparse
from typing import Any, cast

from ray import serve

from adapterhub.errors import ConfigError
from adapterhub.serving.options import FLAGS, adapter_budget_bytes, engine_config
from adapterhub.serving.ray.options import RaySettings

ARGS = {
    "base", "registry", "adapter", "device", "threads", "api_keys", "replicas", "min_replicas", "max_replicas",
    "replica_cpus", "replica_gpus", "target_ongoing_requests", "ray_routing", "max_adapter_memory",
    "max_body_bytes", "body_timeout", "app_name", *FLAGS,
}
"""``app_name``: the application's name in the config (names the replicas' board; default adapterhub)."""


@serve.ingress()
class Ingress:
    """Serve's proxy → this replica's Starlette app → an engine replica (via the handle)."""

    def __init__(self, engines: Any, opts: dict[str, Any]) -> None:
        self._engines, self._opts = engines, opts

    def __serve_build_asgi_app__(self) -> Any:
        from adapterhub.serving.http.cli import http_limits
        from adapterhub.serving.http.keys import KeyRing
        from adapterhub.serving.ray.board import board
        from adapterhub.serving.ray.client import RayEngine
        from adapterhub.serving.ray.ingress import create_ray_app

        o = self._opts
        engine = RayEngine(self._engines, base_alias=o["base"], board=board(o["board"]), registry_url=o["registry"],
                           resolve_ttl_s=o["resolve_ttl_s"], multiplexed=o["multiplexed"])
        keys = KeyRing.from_file(o["api_keys"]) if o["api_keys"] else None
        return create_ray_app(engine, base_alias=o["base"], keys=keys, registry_url=o["registry"],
                              limits=http_limits(argparse.Namespace(**o["limits"])))


def build(args: dict[str, Any]) -> Any:
    """The bound application for ``args`` (checked as ``serve --ray``'s flags are)."""
    from adapterhub.serving.ray.cluster import replica_spec
    from adapterhub.serving.ray.options import ray_settings
    from adapterhub.serving.ray.replica import deployment

    unknown = sorted(set(args) - ARGS)
    if unknown:
        raise ConfigError(f"unknown argument {unknown[0]!r} (known: {', '.join(sorted(ARGS))})")
    ns = argparse.Namespace(**{k: None for k in ARGS}, ray=True, ray_address=None)
    for k, v in args.items():
        setattr(ns, k, v)
    ns.base = ns.base or "smollm2-135m-instruct"
    adapters = ns.adapter or []
    ns.adapter = [adapters] if isinstance(adapters, str) else list(adapters)
    settings: RaySettings | None = ray_settings(ns)
    assert settings is not None
    config = engine_config(ns)
    app_name = str(args.get("app_name") or "adapterhub")
    spec = replica_spec(ns, config, settings, app_name, adapter_budget_bytes(ns))
    opts = {
        "base": ns.base, "registry": ns.registry, "api_keys": ns.api_keys, "board": spec.board,
        "resolve_ttl_s": config.resolve_ttl_s, "multiplexed": settings.routing == "multiplexed",
        "limits": {"max_body_bytes": ns.max_body_bytes, "body_timeout": ns.body_timeout}
    }
    ingress = cast(Any, serve.deployment)(Ingress, name="adapterhub-ingress", ray_actor_options={"num_cpus": 0})
    return ingress.bind(deployment(spec, settings), opts)
