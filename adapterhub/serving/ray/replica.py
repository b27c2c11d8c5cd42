"""The engine replica: one :class:`~adapterhub.serving.Engine` per Ray Serve replica.

Requests arrive with Ray's multiplexed model id set to their resolved adapter
(``name@version``, or the base alias). ``generate`` first asks Ray's multiplexer for that
id, which loads the adapter into this replica's engine on a miss (from the shared
registry, through the engine's single-flight loads) and tells Ray's router that this
replica now holds it, so later requests for it come here.

Eviction has one owner, Ray's multiplexing LRU (``--max-loaded-adapters`` ids per replica
plus the base): when it drops an id, :meth:`_Resident.__del__` unloads the adapter from
the engine, where requests still running on it finish first (in-use is never yanked).
The engine's own LRU is set to twice that, a backstop that only acts if a request races
an eviction and reloads its adapter outside Ray's count. With ``round-robin`` routing Ray
never sees the adapter and the engine's LRU owns eviction as in ``adapterhub serve``.

``generate`` streams ``("accepted", adapter)``, then ``("batch", deltas, completion or
None)`` per engine wake-up, or ``("error", exc)``: errors travel as values so that the
ingress maps them to the same statuses as the single-process server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

import ray
from ray import serve

from adapterhub.errors import AdapterhubError
from adapterhub.serving.ray.board import REPORT_EVERY_S, board
from adapterhub.serving.ray.options import ReplicaSpec
from adapterhub.serving.request import Delta, Request

if TYPE_CHECKING:
    from adapterhub.serving.handle import RequestHandle

log = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 300.0
SEND_EVERY_S = 0.005
"""At most one stream message per this interval (the first and the last go at once): each
Ray message costs about as much as a tiny model's decode step, so token-by-token messages
would double its latency; a model slower than this per token sends every token at once."""


class _Resident:
    """What Ray's multiplexer holds per model id; dropping it unloads the adapter."""

    def __init__(self, replica: EngineReplica | None, key: str | None) -> None:
        self._replica, self.key = replica, key

    def __del__(self) -> None:
        # Ray calls this on eviction (in a thread), and Python again at collection: once.
        replica, self._replica = self._replica, None
        if replica is not None and self.key is not None:
            replica._evicted(self.key)


class EngineReplica:
    """A Ray Serve deployment class (see module docs); built by :func:`deployment`."""

    def __init__(self, spec: ReplicaSpec) -> None:
        os.environ.update(spec.env)
        import torch

        from adapterhub.host import AdapterHost
        from adapterhub.serving import Engine, EngineConfig

        if spec.threads:
            torch.set_num_threads(spec.threads)
        self.spec = spec
        cap = int(spec.engine.get("max_loaded_adapters", EngineConfig().max_loaded_adapters))
        multiplexed = spec.routing == "multiplexed"
        config = EngineConfig(**{**spec.engine, "max_loaded_adapters": 2 * cap if multiplexed else cap})
        host = AdapterHost(spec.base, device=spec.device, registry_url=spec.registry_url,
                           device_budget_bytes=spec.adapter_budget_bytes)
        trust = None
        if spec.trust_file is not None:  # --require-signed: each replica checks what it loads
            from adapterhub.registry.trust import TrustPolicy

            trust = TrustPolicy(spec.trust_file)
        self.engine = Engine(host, config, registry_url=spec.registry_url, trust=trust).start()
        self.pinned = {self.engine.load(ref, timeout=LOAD_TIMEOUT_S) for ref in spec.preload}
        self.ray_evictions = 0
        ctx = serve.get_replica_context()
        self.replica_id = f"{ctx.replica_id.unique_id}"
        if multiplexed:
            # Set at init, not as a class decorator, so the cap can be a flag (+1: the base).
            # A plain function: Ray keeps its LRU as an attribute of what it wraps, and a
            # bound method takes no attributes.
            async def get_model(model_id: str) -> _Resident:
                return await self._load(model_id)

            self._get_model = serve.multiplexed(max_num_models_per_replica=cap + 1)(get_model)
        self._stop = threading.Event()
        threading.Thread(target=self._report_loop, name="adapterhub-board", daemon=True).start()

    async def _load(self, model_id: str) -> _Resident:
        if model_id == self.spec.base_alias:
            return _Resident(None, None)
        key = await asyncio.to_thread(self.engine.load, model_id, LOAD_TIMEOUT_S)
        return _Resident(None if key in self.pinned else self, key)

    def _evicted(self, key: str) -> None:
        self.ray_evictions += 1
        try:
            self.engine.unload(key)
        except AdapterhubError:
            pass  # the backstop LRU or an operator unloaded it already

    async def generate(self, request: Request) -> AsyncIterator[tuple[Any, ...]]:
        model_id = serve.get_multiplexed_model_id()
        try:
            if model_id and self.spec.routing == "multiplexed":
                await self._get_model(model_id)
            # submit renders and tokenizes the prompt: off this replica's event loop.
            handle = await asyncio.to_thread(self.engine.submit, request)
        except Exception as exc:  # noqa: BLE001 - the ingress maps it to a status
            yield ("error", exc)
            return
        yield ("accepted", request.adapter)
        try:
            async for batch in _coalesced(handle):
                last = batch[-1].finish_reason is not None
                yield ("batch", batch, handle.result(timeout=0) if last else None)
        except Exception as exc:  # noqa: BLE001
            yield ("error", exc)
        finally:
            if not handle.done:  # the ingress cancelled (client gone): free the row
                handle.cancel()

    async def load(self, model_id: str) -> str:
        """Admin load: through the multiplexer, so Ray routes this adapter here from now on."""
        if self.spec.routing == "multiplexed":
            r = await self._get_model(model_id)
            return str(r.key)
        return await asyncio.to_thread(self.engine.load, model_id, LOAD_TIMEOUT_S)

    def check_health(self) -> None:
        # Ray Serve calls this; raising marks the replica unhealthy and Ray replaces it.
        if not self.engine.healthy:
            raise RuntimeError("the engine thread died")

    def info(self) -> dict[str, Any]:
        """What this replica posts on the board: stats, resident adapters, pid."""
        from adapterhub.serving.http.models import resident

        stats = self.engine.stats()
        stats["adapter_evictions"] += self.ray_evictions
        adapters = resident(self.engine.host)
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "stats": stats,
                "adapters": adapters}

    def _report_loop(self) -> None:
        b, seen = board(self.spec.board), 0
        while not self._stop.wait(REPORT_EVERY_S):
            try:
                for seq, name in ray.get(b.report.remote(self.replica_id, self.info(), seen), timeout=10):
                    seen = max(seen, seq)
                    if name in self.engine.host.loaded():
                        self._evicted_by_operator(name)
            except Exception as exc:  # noqa: BLE001 - the board may be restarting; report again later
                log.debug("board report failed: %s", exc)
                b = board(self.spec.board)

    def _evicted_by_operator(self, name: str) -> None:
        try:
            self.engine.unload(name)
        except AdapterhubError:
            pass
        self.pinned.discard(name)

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()


async def _coalesced(handle: RequestHandle) -> AsyncIterator[list[Delta]]:
    """``handle``'s delta batches, merged so that at most one leaves every
    :data:`SEND_EVERY_S` except the first and the last. Deltas that came before an error
    are sent before the error is raised."""
    it = handle.batches().__aiter__()
    pending: list[Delta] = []
    last_sent = 0.0
    nxt: asyncio.Future[list[Delta]] = asyncio.ensure_future(it.__anext__())
    try:
        while True:
            wait = None if not pending else max(0.0, last_sent + SEND_EVERY_S - time.perf_counter())
            done, _ = await asyncio.wait({nxt}, timeout=wait)
            if nxt in done:
                try:
                    pending.extend(nxt.result())
                except StopAsyncIteration:
                    break
                except Exception:
                    if pending:
                        yield pending
                    raise
                nxt = asyncio.ensure_future(it.__anext__())
                final = pending[-1].finish_reason is not None
                if not final and time.perf_counter() - last_sent < SEND_EVERY_S:
                    continue
            if pending:
                yield pending
                pending, last_sent = [], time.perf_counter()
        if pending:
            yield pending
    finally:
        nxt.cancel()  # ends handle.batches() too (its finally drops its waker)


def deployment(spec: ReplicaSpec, settings: Any, name: str = "adapterhub-engine") -> Any:
    """The bound deployment for ``spec`` with the replica count / autoscaling of ``settings``."""
    max_running = int(spec.engine.get("max_running", 32))
    max_queue = int(spec.engine.get("max_queue", 256))
    opts: dict[str, Any] = {
        "name": name,
        # The engine queues and refuses (429) by itself: Ray must not hold requests back first.
        "max_ongoing_requests": max_running + max_queue,
        "ray_actor_options": {"num_cpus": settings.replica_cpus, "num_gpus": settings.replica_gpus},
        "health_check_period_s": 2.0,
        "health_check_timeout_s": 30.0,
        "graceful_shutdown_timeout_s": 5.0,
        # A replica that cannot build its engine (a --base typo, a registry down for
        # --adapter) fails the same way again: report it after 3 tries, not Ray's 20.
        "max_constructor_retry_count": 3,
    }
    if settings.autoscaling:
        opts["autoscaling_config"] = {
            "min_replicas": settings.min_replicas, "max_replicas": settings.max_replicas,
            "target_ongoing_requests": settings.target_ongoing_requests or max_running,
        }
    else:
        opts["num_replicas"] = settings.replicas
    return cast(Any, serve.deployment)(EngineReplica).options(**opts).bind(spec)
