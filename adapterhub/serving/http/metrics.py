"""Prometheus metrics of one HTTP server (one registry per app, so tests can run several).

HTTP-side counters and histograms are updated by the routes; the engine's own figures
(queue depth, running rows, adapter loads...) are read from ``Engine.stats()`` at each
scrape by a custom collector, so they are never stale and cost nothing between scrapes.
TTFT, inter-token gaps and request latency use the engine's own times (``Delta.t``
from ``RequestHandle.submitted``), so they exclude this server's delays in sending.

Label sets are bounded: ``adapter`` is a resolved ``name@version`` (or the base alias, or
``-`` when the request never reached an adapter), ``key`` a key *name* from the keys file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _EngineCollector(Collector):
    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Any]:
        s = self._stats()
        for name, what in (
            ("queue_depth", "requests admitted but not yet decoding"),
            ("running", "rows decoding now"),
            ("prefilling", "requests prefilling now"),
            ("waiting_for_adapter", "requests waiting for their adapter to load"),
        ):
            yield GaugeMetricFamily(f"adapterhub_engine_{name}", what, value=float(s.get(name, 0)))
        for name, what in (
            ("adapter_loads", "adapters loaded by the engine"),
            ("adapter_load_failures", "adapter loads that failed"),
            ("adapter_evictions", "adapters unloaded by the engine's LRU"),
            ("steps", "engine steps"),
            ("forwards", "model forwards (one per step when every row packs)"),
            ("prefill_forwards", "forwards that prefilled prompt tokens"),
            ("refused", "requests refused because the queue was full"),
        ):
            yield CounterMetricFamily(f"adapterhub_engine_{name}", what, value=float(s.get(name, 0)))
        pc = s.get("prefix_cache")
        if isinstance(pc, dict):  # None with --no-prefix-cache: no families at all
            yield CounterMetricFamily("adapterhub_engine_prefix_cache_lookup_tokens",
                                      "prompt tokens looked up in the prefix cache", value=float(pc.get("lookups", 0)))
            yield CounterMetricFamily("adapterhub_engine_prefix_cache_hit_tokens",
                                      "prompt tokens served from the prefix cache (not prefilled)", value=float(pc.get("hits", 0)))
            yield CounterMetricFamily("adapterhub_engine_prefix_cache_evicted_blocks",
                                      "prefix-cache blocks evicted (LRU, under --max-kv-tokens)", value=float(pc.get("evictions", 0)))
            yield GaugeMetricFamily("adapterhub_engine_prefix_cache_hit_rate",
                                    "hit tokens / looked-up tokens since start", value=float(pc.get("hit_rate", 0.0)))
            yield GaugeMetricFamily("adapterhub_engine_prefix_cache_tokens", "tokens held in the prefix cache",
                                    value=float(pc.get("tokens", 0)))
        fam = CounterMetricFamily("adapterhub_engine_finished", "requests finished, by reason", labels=["reason"])
        for reason, n in sorted(dict(s.get("finished", {})).items()):
            fam.add_metric([reason], float(n))
        yield fam


class Metrics:
    """The server's metrics; :meth:`render` gives the Prometheus text exposition."""

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "adapterhub_http_requests", "HTTP requests by route, status, adapter and key",
            ["route", "status", "adapter", "key"], registry=r,
        )
        self.prompt_tokens = Counter("adapterhub_prompt_tokens", "prompt tokens served", ["adapter"], registry=r)
        self.completion_tokens = Counter(
            "adapterhub_completion_tokens", "completion tokens generated", ["adapter"], registry=r
        )
        self.ttft = Histogram(
            "adapterhub_time_to_first_token_seconds", "engine submit to first token", ["adapter"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.itl = Histogram(
            "adapterhub_inter_token_seconds", "time between streamed tokens", ["adapter"],
            buckets=_ITL_BUCKETS, registry=r,
        )
        self.latency = Histogram(
            "adapterhub_request_seconds", "engine submit to last token", ["adapter"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.loop_lag = Histogram(
            "adapterhub_event_loop_lag_seconds", "how late the HTTP event loop ran a 20 ms probe (time it was blocked)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0), registry=r,
        )
        r.register(_EngineCollector(stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)
