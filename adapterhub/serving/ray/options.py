"""``serve --ray``'s flags and what a replica is built from. Imported at every CLI start
(the flags are declared on ``serve``'s parser), so this module never imports Ray."""

from __future__ import annotations

import argparse
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapterhub.errors import ConfigError

ROUTING = ("multiplexed", "round-robin")


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything an engine replica needs to build its engine (pickled to each replica)."""

    base: str
    base_alias: str
    registry_url: str | None = None
    device: str | None = None
    threads: int | None = None
    engine: dict[str, Any] = field(default_factory=dict)
    """``EngineConfig`` fields the operator set (the rest keep their defaults)."""
    adapter_budget_bytes: int | None = None
    preload: tuple[str, ...] = ()
    routing: str = "multiplexed"
    board: str = "adapterhub-board-adapterhub"
    env: dict[str, str] = field(default_factory=dict)
    """Variables replicas must see as the ingress does (``ADAPTERHUB_HOME``, ``HF_HUB_OFFLINE``...)."""
    trust_file: str | None = None
    """``--require-signed``: the trust file every replica checks its loads against (a path
    each node must see: on a cluster, ship it with the image or a shared volume)."""


@dataclass(frozen=True)
class RaySettings:
    address: str | None = None
    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    replica_cpus: float = 1.0
    replica_gpus: float = 0.0
    target_ongoing_requests: float | None = None
    routing: str = "multiplexed"

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None


def add_ray_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Ray Serve replicas (docs/serving-ray.md; needs adapterhub[ray])")
    g.add_argument("--ray", action="store_true", help="run engine replicas on Ray Serve, requests routed by adapter")
    g.add_argument("--replicas", type=int, default=None, metavar="N", help="fixed number of engine replicas [default: 1]")
    g.add_argument("--min-replicas", type=int, default=None, metavar="A", help="autoscale between A and --max-replicas on ongoing requests")
    g.add_argument("--max-replicas", type=int, default=None, metavar="B")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="join this Ray cluster (ray://... or host:port) [default: start a local Ray on 127.0.0.1, stopped on exit]")
    g.add_argument("--replica-cpus", type=float, default=None, metavar="N", help="CPUs Ray reserves per replica [default: 1]")
    g.add_argument("--replica-gpus", type=float, default=None, metavar="N", help="GPUs per replica (num_gpus) [default: 0]")
    g.add_argument("--target-ongoing-requests", type=float, default=None, metavar="N",
                   help="autoscaling target per replica [default: --max-running]")
    g.add_argument("--ray-routing", choices=ROUTING, default=None,
                   help="multiplexed (default): requests go to replicas holding their adapter; round-robin: the "
                        "adapter is hidden from Ray (for comparison)")


def ray_settings(args: argparse.Namespace) -> RaySettings | None:
    """The checked Ray flags (None without ``--ray``); one-line errors before anything loads."""
    ray_only = ("replicas", "min_replicas", "max_replicas", "ray_address", "replica_cpus", "replica_gpus",
                "target_ongoing_requests", "ray_routing")
    given = [n for n in ray_only if getattr(args, n, None) is not None]
    if not getattr(args, "ray", False):
        if given:
            raise ConfigError(f"--{given[0].replace('_', '-')} needs --ray")
        return None
    if importlib.util.find_spec("ray") is None:
        raise ConfigError("--ray needs Ray Serve: pip install 'adapterhub[ray]'")
    if args.replicas is not None and (args.min_replicas is not None or args.max_replicas is not None):
        raise ConfigError("invalid --replicas: give either --replicas or --min-replicas/--max-replicas")
    if (args.min_replicas is None) != (args.max_replicas is None):
        raise ConfigError("invalid --min-replicas: give both --min-replicas and --max-replicas")
    if args.replicas is not None and args.replicas < 1:
        raise ConfigError("invalid --replicas: must be >= 1")
    if args.min_replicas is not None and not 0 < args.min_replicas <= args.max_replicas:
        raise ConfigError("invalid --min-replicas: need 1 <= --min-replicas <= --max-replicas")
    for name in ("replica_cpus", "replica_gpus"):
        v = getattr(args, name)
        if v is not None and v < 0:
            raise ConfigError(f"invalid --{name.replace('_', '-')}: must be >= 0")
    if args.target_ongoing_requests is not None and not args.target_ongoing_requests > 0:
        raise ConfigError("invalid --target-ongoing-requests: must be > 0")
    for ref in getattr(args, "adapter", []):
        if Path(ref).exists():  # a replica may run on another node: only the registry is shared
            raise ConfigError(f"invalid --adapter: with --ray give a registry reference, not a directory ({ref}); "
                              "push it first")
    return RaySettings(
        address=args.ray_address, replicas=args.replicas or 1, min_replicas=args.min_replicas,
        max_replicas=args.max_replicas, replica_cpus=1.0 if args.replica_cpus is None else args.replica_cpus,
        replica_gpus=args.replica_gpus or 0.0, target_ongoing_requests=args.target_ongoing_requests,
        routing=args.ray_routing or "multiplexed",
    )


def forwarded_env() -> dict[str, str]:
    """The variables that decide where the registry, caches and models are found."""
    return {k: v for k, v in os.environ.items() if k.startswith(("ADAPTERHUB_", "HF_", "AWS_", "TRANSFORMERS_"))}
