""":class:`RayEngine`: the engine the Starlette app talks to under ``serve --ray``.

It implements :class:`~adapterhub.serving.http.backend.EngineLike`, so every route,
parser, formatter, key check and error body is the one of ``adapterhub serve``; only
where a request runs changes. ``submit`` resolves the request's adapter to its
``name@version`` (the multiplexed model id: requests for one adapter stick to the
replicas that hold it), opens a stream on a replica through the
:class:`DeploymentHandle`, waits until the replica accepted it (so refusals such as
429, 400 and 422 surface exactly where the single-process engine raises them), and
returns an ordinary :class:`RequestHandle` that a task on this client's event loop
fills with the replica's deltas.

A replica that dies before sending any delta: the request is sent again (Ray routes it
to a live replica; same adapter version, same request). After output was sent: the
request fails with :class:`ReplicaUnavailableError` (503). Never another adapter, never
a hang.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from adapterhub.errors import AdapterUnloadedError, EngineClosedError, ReplicaUnavailableError
from adapterhub.refs import is_base
from adapterhub.serving.handle import RequestHandle
from adapterhub.serving.request import Completion, Delta, Request

log = logging.getLogger(__name__)
_ids = itertools.count(1)

OPEN_ATTEMPTS = 4
"""Tries to reach a live replica before a request fails with 503 (Ray replaces a dead
replica in seconds; the others keep serving meanwhile)."""
RETRY_BACKOFF_S = 0.5
BOARD_EVERY_S = 0.25
"""How often a background thread reads the replicas' board: ``/health`` and ``/metrics``
run on the event loop and read this snapshot, never Ray itself."""
BOARD_FRESH_S = 5.0

try:  # Serve's own "replica/deployment unavailable" errors (names vary across versions)
    from ray.serve.exceptions import DeploymentUnavailableError as _DeploymentUnavailable
    from ray.serve.exceptions import ReplicaUnavailableError as _SeveReplicaUnavailable
    _LOST: tuple[type[BaseException], ...] = (
        RayActorError, ActorUnavailableError, _DeploymentUnavailable, _SeveReplicaUnavailable)
except ImportError:  # pragma: no cover
    _LOST = (RayActorError, ActorUnavailableError)


def replica_lost(exc: BaseException) -> bool:
    return isinstance(exc, _LOST)


@dataclass
class _Call:
    request: Request
    model_id: str
    handle: RequestHandle
    gen: Any = None
    pushed: int = 0
    texts: list[str] | None = None
    token_ids: list[int] | None = None


class RemoteHost:
    """The replicas' adapters as the routes read a host (``/v1/models``, unload)."""

    def __init__(self, engine: RayEngine) -> None:
        self._engine = engine
        self.base = SimpleNamespace(name=engine.base_alias)

    def _rows(self) -> dict[str, dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        for info in self._engine.replicas().values():
            for a in info["adapters"]:
                rows.setdefault(a["name"], a)
        return rows

    def adapters(self) -> list[dict[str, Any]]:
        return list(self._rows().values())

    def loaded(self) -> list[str]:
        return sorted(self._rows())

    def entry(self, name: str) -> Any:
        row = self._rows().get(name)
        if row is None:
            raise AdapterUnloadedError(name)
        return SimpleNamespace(label=row["root"], manifest=SimpleNamespace(task=row["task"], metrics=row["metrics"]))


class RayEngine:
    """Forwards requests to engine replicas on Ray Serve (see module docs)."""

    def __init__(
        self, handle: Any, *, base_alias: str, board: Any, registry_url: str | None = None,
        resolve_ttl_s: float = 1.0, multiplexed: bool = True, on_close: Callable[[], None] | None = None,
    ) -> None:
        self._deployment = handle
        self.base_alias = base_alias
        self.registry_url = registry_url
        self.resolve_ttl_s = resolve_ttl_s
        self.multiplexed = multiplexed
        self._board = board
        self._on_close = on_close
        self._closed = False
        self._resolved: dict[str, tuple[str, float]] = {}
        self._resolve_lock = threading.Lock()
        self._registry: Any = None
        self._board_cache: tuple[float, dict[str, dict[str, Any]]] = (0.0, {})
        self._stop = threading.Event()
        threading.Thread(target=self._watch, name="adapterhub-ray-board", daemon=True).start()
        self._calls: set[asyncio.Task[None]] = set()
        self.retries = 0
        self.host = RemoteHost(self)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="adapterhub-ray-client", daemon=True)
        self._thread.start()

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> RayEngine:
        return self

    @property
    def healthy(self) -> bool:
        """True while at least one replica reports (Ray is replacing any that died)."""
        return not self._closed and bool(self.replicas())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()

        def stop() -> None:
            for t in list(self._calls):
                t.cancel()
        self._loop.call_soon_threadsafe(stop)
        try:
            if self._on_close is not None:
                self._on_close()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    # --- what replicas hold ------------------------------------------------------------------
    def replicas(self) -> dict[str, dict[str, Any]]:
        """Each live replica's latest report (stats, resident adapters, pid); {} when the
        board has not been read for :data:`BOARD_FRESH_S` (then /health says unhealthy)."""
        t, snapshot = self._board_cache
        return snapshot if time.monotonic() - t < BOARD_FRESH_S else {}

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                fresh: dict[str, dict[str, Any]] = ray.get(self._board.read.remote(), timeout=5)
                self._board_cache = (time.monotonic(), fresh)
            except Exception as exc:  # noqa: BLE001 - metrics and listings degrade, requests do not
                if not self._stop.is_set():
                    log.warning("replica board unreadable: %s", exc)
            self._stop.wait(BOARD_EVERY_S)

    def stats(self) -> dict[str, Any]:
        """The replicas' engine stats summed (per-replica figures: :mod:`.metrics`)."""
        total: dict[str, Any] = {"finished": {}}
        for info in self.replicas().values():
            for k, v in info["stats"].items():
                if k == "finished":
                    for reason, n in v.items():
                        total["finished"][reason] = total["finished"].get(reason, 0) + n
                elif k == "prefix_cache" and isinstance(v, dict):
                    pc = total.setdefault("prefix_cache", {})
                    for name, n in v.items():
                        if name not in ("hit_rate", "block_tokens"):
                            pc[name] = pc.get(name, 0) + n
                elif isinstance(v, (int, float)):
                    total[k] = total.get(k, 0) + v
        pc = total.get("prefix_cache")
        if pc is not None:
            pc["hit_rate"] = round(pc.get("hits", 0) / pc["lookups"], 4) if pc.get("lookups") else 0.0
        total["replicas"] = len(self.replicas())
        total["retries"] = self.retries
        return total

    # --- adapters ------------------------------------------------------------------------------
    def model_id(self, ref: str | None) -> str:
        """The multiplexed model id of ``ref``: its ``name@version`` (the base alias for none).
        Tags and bare names are resolved here, cached for ``resolve_ttl_s`` as the engine does."""
        if ref is None or is_base(ref, self.base_alias):
            return self.base_alias
        from adapterhub.registry.names import parse_ref

        parsed = parse_ref(ref)  # InvalidNameError (404) for a malformed reference
        if parsed.version is not None:
            return f"{parsed.name}@{parsed.version}"
        with self._resolve_lock:
            hit = self._resolved.get(ref)
            if hit is not None and time.monotonic() - hit[1] < self.resolve_ttl_s:
                return hit[0]
            if self._registry is None:
                from adapterhub.registry.client import Registry

                self._registry = Registry(self.registry_url, progress=False)
            name, version = self._registry.resolve(self._registry.store(), parsed)
            key = f"{name}@{version}"
            self._resolved[ref] = (key, time.monotonic())
            return key

    def load(self, ref: str, timeout: float | None = None) -> str:
        """Load ``ref`` on one replica (the one Ray routes its id to); later requests for it
        go there. Other replicas load it on their first request for it."""
        self._check_open()
        key = self.model_id(ref)
        opts = {"multiplexed_model_id": key} if self.multiplexed else {}
        response = self._deployment.options(**opts).load.remote(key)
        try:
            return str(response.result(timeout_s=timeout))
        except TimeoutError:
            raise
        except Exception as exc:  # noqa: BLE001 - a load error raised in the replica
            raise getattr(exc, "cause", None) or exc from None

    def unload(self, name: str) -> None:
        """Every replica unloads ``name`` on its next report (within a second)."""
        ray.get(self._board.unload.remote([name]), timeout=10)

    # --- requests ------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError("the engine is closed")

    def submit(self, request: Request) -> RequestHandle:
        """Send ``request`` to a replica holding its adapter; returns once a replica accepted it."""
        self._check_open()
        model_id = self.model_id(request.adapter)
        routed = request.model_copy(update={"adapter": None if model_id == self.base_alias else model_id})
        handle = RequestHandle(request.request_id or f"req-{next(_ids)}", request)
        call = _Call(routed, model_id, handle, texts=[], token_ids=[])

        def on_cancel() -> None:  # any thread: the HTTP route, when its client went away
            self._loop.call_soon_threadsafe(self._cancel, call)
        handle._on_cancel = on_cancel
        asyncio.run_coroutine_threadsafe(self._open(call), self._loop).result()
        return handle

    def _stream(self, call: _Call) -> Any:
        opts: dict[str, Any] = {"stream": True}
        if self.multiplexed:
            opts["multiplexed_model_id"] = call.model_id
        return self._deployment.options(**opts).generate.remote(call.request)

    async def _open(self, call: _Call) -> None:
        await self._connect(call, again=False)
        task = self._loop.create_task(self._pump(call))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _connect(self, call: _Call, *, again: bool) -> None:
        """Open the stream and wait for ``accepted``; retried while replicas are replaced.
        A refusal (``error``) is raised as it is: 429, 400, 404, 422 as in one process."""
        for attempt in range(OPEN_ATTEMPTS):
            if again or attempt:
                self.retries += 1
                await asyncio.sleep(RETRY_BACKOFF_S * (attempt + 1))
            call.gen = self._stream(call)
            try:
                msg = await call.gen.__anext__()
            except Exception as exc:  # noqa: BLE001
                if not replica_lost(exc):
                    raise
                log.warning("replica lost before any output; retrying", extra={"fields": {
                    "request_id": call.handle.request_id, "adapter": call.model_id, "error": repr(exc)}})
                continue
            if msg[0] == "error":
                raise msg[1]
            call.handle.adapter = msg[1]
            return
        raise ReplicaUnavailableError(f"no engine replica answered after {OPEN_ATTEMPTS} tries; retry")

    async def _pump(self, call: _Call) -> None:
        handle = call.handle
        try:
            while not handle.done:
                try:
                    msg = await call.gen.__anext__()
                except StopAsyncIteration:
                    handle._finish(None, ReplicaUnavailableError("the replica ended the stream early"))
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    if handle.done:
                        return  # cancelled by the client meanwhile
                    if replica_lost(exc) and call.pushed == 0:
                        try:  # nothing was streamed: run it again on a live replica
                            await self._connect(call, again=True)
                        except Exception as again:  # noqa: BLE001
                            handle._finish(None, again)
                            return
                        continue
                    handle._finish(None, _unavailable(exc) if replica_lost(exc) else exc)
                    return
                if msg[0] == "error":
                    handle._finish(None, msg[1])
                    return
                if msg[0] == "batch":
                    self._deliver(call, msg[1], msg[2])
        except asyncio.CancelledError:  # the client is closing
            handle._finish(None, EngineClosedError("the engine is closed"))
            if call.gen is not None:
                call.gen.cancel()

    def _deliver(self, call: _Call, deltas: list[Delta], completion: Completion | None) -> None:
        now = time.perf_counter()  # this process's clock: TTFT at the ingress includes the hop
        for d in deltas:
            d.t = now
        assert call.texts is not None and call.token_ids is not None
        body = deltas[:-1] if completion is not None else deltas
        for d in body:
            call.pushed += 1
            call.texts.append(d.text)
            call.token_ids.extend(d.token_ids)
            call.handle._push(d)
        if completion is not None:
            call.pushed += 1
            completion.request_id = call.handle.request_id
            call.handle._finish(completion, last=deltas[-1])

    def _cancel(self, call: _Call) -> None:
        """The client went away: end the handle as the engine would (``cancelled``) and stop
        the replica's row (cancelling the Ray stream cancels its generator)."""
        if not call.handle.done:
            assert call.texts is not None and call.token_ids is not None
            c = Completion(call.handle.request_id, "".join(call.texts), list(call.token_ids), "cancelled",
                           call.handle.adapter, 0)
            call.handle._finish(c, last=Delta("", [], finish_reason="cancelled"))
        if call.gen is not None:
            call.gen.cancel()


def _unavailable(exc: BaseException) -> ReplicaUnavailableError:
    return ReplicaUnavailableError(f"the engine replica serving this request went away ({type(exc).__name__}); retry")
