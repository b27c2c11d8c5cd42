"""Where replicas post what they hold, so the ingress can show it (``/metrics``,
``/v1/models``) and reach every replica (unload).

Ray Serve routes a request to *one* replica and has no broadcast, and its own metrics
need the dashboard's agent (off by default). So each replica reports its engine stats and
resident adapters here every :data:`REPORT_EVERY_S`; an entry not refreshed within
:data:`STALE_S` is a dead replica and is dropped. An unload is posted here too and applied
by every replica on its next report. This is a notice board, not a manager: Ray Serve
still starts, routes to, health-checks and replaces the replicas.
"""

from __future__ import annotations

import time
from typing import Any

import ray

NAMESPACE = "adapterhub"
REPORT_EVERY_S = 0.25
STALE_S = 3.0


@ray.remote(num_cpus=0, max_restarts=-1)
class StatsBoard:
    def __init__(self) -> None:
        self._replicas: dict[str, tuple[float, dict[str, Any]]] = {}
        self._unloads: list[tuple[int, str]] = []

    def report(self, replica: str, info: dict[str, Any], seen: int) -> list[tuple[int, str]]:
        """Store ``replica``'s latest info; answer the unloads posted after ``seen``."""
        self._replicas[replica] = (time.monotonic(), info)
        return [(seq, name) for seq, name in self._unloads if seq > seen]

    def read(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        for k in [k for k, (t, _) in self._replicas.items() if now - t > STALE_S]:
            del self._replicas[k]
        return {k: info for k, (_, info) in self._replicas.items()}

    def unload(self, names: list[str]) -> int:
        seq = self._unloads[-1][0] if self._unloads else 0
        for n in names:
            seq += 1
            self._unloads.append((seq, n))
        del self._unloads[:-1024]  # bounded: a replica that missed this many restarts clean anyway
        return seq


def board(name: str) -> Any:
    """The board called ``name`` (created by whoever comes first: ingress or replica).
    Detached so that it outlives the ingress process of ``serve deploy``; ``serve --ray``
    kills it on exit."""
    return StatsBoard.options(  # type: ignore[attr-defined]
        name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
    ).remote()
