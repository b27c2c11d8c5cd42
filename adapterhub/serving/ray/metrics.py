"""Per-replica families at the ingress's ``/metrics``: which replica holds which adapter,
and each replica's engine figures (the unlabelled ``adapterhub_engine_*`` families are
their sums). Read from the replicas' latest board reports at each scrape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from adapterhub.serving.ray.client import RayEngine

_GAUGES = ("queue_depth", "running", "prefilling", "waiting_for_adapter")
_COUNTERS = ("adapter_loads", "adapter_load_failures", "adapter_evictions", "requests", "prompt_tokens",
             "completion_tokens", "steps", "refused")


class ReplicaCollector(Collector):
    def __init__(self, engine: RayEngine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Any]:
        replicas = self._engine.replicas()
        yield GaugeMetricFamily("adapterhub_ray_replicas", "engine replicas reporting now", value=float(len(replicas)))
        yield CounterMetricFamily("adapterhub_ray_retries", "requests re-sent because their replica went away "
                                  "before any output", value=float(self._engine.retries))
        for name in _GAUGES:
            fam = GaugeMetricFamily(f"adapterhub_replica_{name}", f"{name} of each replica", labels=["replica", "pid"])
            for rid, info in sorted(replicas.items()):
                fam.add_metric([rid, str(info["pid"])], float(info["stats"].get(name, 0)))
            yield fam
        for name in _COUNTERS:
            fam_c = CounterMetricFamily(f"adapterhub_replica_{name}", f"{name} of each replica", labels=["replica", "pid"])
            for rid, info in sorted(replicas.items()):
                fam_c.add_metric([rid, str(info["pid"])], float(info["stats"].get(name, 0)))
            yield fam_c
        held = GaugeMetricFamily("adapterhub_replica_adapter_loaded", "1 for each adapter a replica holds",
                                 labels=["replica", "adapter"])
        inflight = GaugeMetricFamily("adapterhub_replica_adapter_in_flight", "requests running on each held adapter",
                                     labels=["replica", "adapter"])
        for rid, info in sorted(replicas.items()):
            for a in info["adapters"]:
                held.add_metric([rid, a["root"]], 1.0)
                inflight.add_metric([rid, a["root"]], float(a.get("in_flight", 0)))
        yield held
        yield inflight
