"""Start (or join) Ray, deploy the engine replicas, and always take it all down again.

Without ``--ray-address`` a local Ray is started bound to 127.0.0.1 with the dashboard
off, and :meth:`RayEngine.close` shuts Serve and Ray down (no raylet or GCS left). With an
address this process joins the cluster, and on exit deletes only its own application.
Serve's own HTTP proxy is not started: requests come through our Starlette app.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from adapterhub.serving.config import EngineConfig
from adapterhub.serving.ray.options import RaySettings, ReplicaSpec, forwarded_env

log = logging.getLogger(__name__)


def start_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Connect to ``address`` or start a local Ray on 127.0.0.1; True if started here."""
    # No usage report (nothing leaves this machine) and no token-auth prompt for a
    # loopback-only instance.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return False
    common: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": False}
    if address is not None:
        ray.init(address=address, **common)
        return False
    # Ray nices its workers to 15 (made for background tasks); engine replicas are this
    # server's main work and must not lose the CPU to every other process on the machine.
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", num_cpus=num_cpus, **common)
    return True


def local_cpus(settings: RaySettings) -> int:
    """Logical CPUs of a local Ray: enough for the largest replica count the flags allow
    (oversubscribing a small machine is the operator's choice, not a pending replica)."""
    most = settings.max_replicas if settings.autoscaling else settings.replicas
    assert most is not None
    return max(os.cpu_count() or 1, int(most * settings.replica_cpus + 0.999))


def replica_spec(args: argparse.Namespace, config: EngineConfig, settings: RaySettings, app_name: str,
                 budget: int | None) -> ReplicaSpec:
    return ReplicaSpec(
        base=args.base, base_alias=args.base, registry_url=args.registry, device=args.device, threads=args.threads,
        engine=config.model_dump(exclude_unset=True), adapter_budget_bytes=budget, preload=tuple(args.adapter),
        routing=settings.routing, board=f"adapterhub-board-{app_name}", env=forwarded_env(),
        trust_file=_trust_file(args),
    )


def _trust_file(args: argparse.Namespace) -> str | None:
    if not getattr(args, "require_signed", False):
        return None
    from adapterhub.registry.signing_cli import required_trust

    return str(required_trust(args).path)  # checked here, at start, like the single-process server


def deploy(spec: ReplicaSpec, settings: RaySettings, app_name: str) -> Any:
    """Run the engine deployment as application ``app_name``; returns its handle once
    every replica is up (each has loaded the base and its ``--adapter`` refs)."""
    from ray import serve

    from adapterhub.serving.ray.replica import deployment

    serve.start(http_options={"location": "NoServer"})
    return serve.run(deployment(spec, settings), name=app_name, route_prefix=None)


def ray_engine(args: argparse.Namespace, config: EngineConfig, settings: RaySettings, budget: int | None,
               app_name: str = "adapterhub") -> Any:
    """Start/join Ray, deploy, and return the :class:`RayEngine` whose ``close`` undoes it all."""
    import ray
    from ray import serve

    from adapterhub.serving.ray.board import board
    from adapterhub.serving.ray.client import RayEngine

    started = start_ray(settings.address, local_cpus(settings) if settings.address is None else None)
    spec = replica_spec(args, config, settings, app_name, budget)
    notice = None

    def teardown() -> None:
        try:
            if started:
                serve.shutdown()
            else:
                serve.delete(app_name)
            if notice is not None:
                ray.kill(notice)
        except Exception as exc:  # noqa: BLE001 - Ray itself must still stop
            log.warning("serve shutdown failed: %s", exc)
        finally:
            if started:
                ray.shutdown()

    try:
        notice = board(spec.board)
        handle = deploy(spec, settings, app_name)
    except BaseException:
        teardown()
        raise
    return RayEngine(handle, base_alias=spec.base_alias, board=notice, registry_url=args.registry,
                     resolve_ttl_s=config.resolve_ttl_s, multiplexed=settings.routing == "multiplexed",
                     on_close=teardown)
