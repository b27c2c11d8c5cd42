"""Which adapter a request gets, and loading missing ones without stopping the batch.

A request names an adapter as a pool name (``sentiment``, loaded by the operator), a
registry reference (``team/x``, ``team/x@1.2.0``, ``team/x:stable``) or nothing. A
reference is resolved once, to an immutable ``name@version``, and that string is the
pool key the engine loads it under: two versions of one name can be resident at once,
and a request pinned to ``team/x@1.2.0`` keeps it even when ``latest`` moves.

Loading is split across two threads so decoding never waits for it:

* a loader thread resolves the reference (a tag read, possibly remote), pulls the
  version into the local cache and runs :meth:`AdapterHost.prepare` (read, sha256,
  every check, the copy into an invisible slot);
* the engine thread, between two steps, runs :meth:`AdapterHost.commit` (the publish
  under the forward lock) and wakes the requests that waited for it.

Loads are single-flight per ``name@version``: N concurrent requests for the same cold
adapter share one :class:`Ticket` and cause one load. A failed load fails the requests
on that ticket only, with the original error (not found, integrity, incompatible...).
Adapters loaded this way are kept in an LRU of at most ``max_loaded`` entries; the
least recently used one that no request holds is unloaded past that.

Loader threads are daemon threads fed from a queue (not a ``ThreadPoolExecutor``, whose
workers the interpreter joins at exit): a fetch that hangs on a dead registry must not
keep :meth:`AdapterManager.close` or the process from ending. ``close`` settles every
outstanding ticket with :class:`EngineClosedError` and gives the threads a bounded time.
Every load, failure and eviction is logged with its time and bytes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from adapterhub.errors import AdapterUnloadedError, EngineClosedError

if TYPE_CHECKING:
    from adapterhub.host.host import AdapterHost, PreparedLoad

log = logging.getLogger(__name__)

CLOSE_WAIT_S = 2.0
"""How long :meth:`AdapterManager.close` waits for loader threads before leaving them
(daemons: a hung fetch ends with the process)."""

class Ticket:
    """One in-flight resolution/load; every request waiting for it holds the same object."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        self.started = time.perf_counter()
        self.key: str | None = None
        self.error: BaseException | None = None
        self._event = threading.Event()

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def _settle(self, key: str | None, error: BaseException | None) -> None:
        self.key, self.error = key, error
        self._event.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)


class AdapterManager:
    """Resolves request adapters to pool keys and loads missing ones (see module docs)."""

    def __init__(
        self,
        host: AdapterHost,
        *,
        registry_url: str | None,
        max_loaded: int,
        loader_threads: int,
        resolve_ttl_s: float,
        wake: Any,
        trust: Any = None,
    ) -> None:
        self.host = host
        self.registry_url = registry_url
        # A TrustPolicy (``serve --require-signed``): a load fetches nothing unless a key
        # trusted for the name signed the version; the SignatureError goes to the requests.
        self.trust = trust
        self.max_loaded = max_loaded
        self.resolve_ttl_s = resolve_ttl_s
        self._wake = wake  # called (any thread) when a prepared load waits for commit
        self._jobs: queue.SimpleQueue[Ticket | None] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._threads = [
            threading.Thread(target=self._worker, name=f"adapterhub-load-{i}", daemon=True) for i in range(loader_threads)
        ]
        for t in self._threads:
            t.start()
        self._lock = threading.Lock()
        self._by_ref: dict[str, Ticket] = {}
        self._by_key: dict[str, Ticket] = {}
        self._resolved: dict[str, tuple[str, float]] = {}
        self._owned: OrderedDict[str, None] = OrderedDict()
        self._commits: queue.SimpleQueue[tuple[Ticket, PreparedLoad | None, BaseException | None]] = queue.SimpleQueue()
        self._local = threading.local()
        self.loads = 0
        self.load_failures = 0
        self.evictions = 0

    # --- lookup (any thread) ---------------------------------------------------------------
    def lookup(self, ref: str) -> str | Ticket:
        """The pool key serving ``ref`` now, or a ticket that will name it once loaded."""
        names = set(self.host.loaded())
        if ref in names:
            return ref
        from adapterhub.registry.names import parse_ref

        parsed = parse_ref(ref)  # InvalidNameError for a malformed reference
        if parsed.version is not None:
            key = f"{parsed.name}@{parsed.version}"
            if key in names:
                return key
        elif self.resolve_ttl_s > 0:
            with self._lock:
                hit = self._resolved.get(ref)
            if hit is not None and hit[0] in names:
                if time.monotonic() - hit[1] >= self.resolve_ttl_s:
                    self._refresh(ref)
                # Stale-while-revalidate: a loaded resolution serves at once while a
                # stale one is re-resolved in the background (the next request sees it).
                return hit[0]
        with self._lock:
            ticket = self._by_ref.get(ref)
            if ticket is None:
                ticket = self._start(ref)
            return ticket

    def _start(self, ref: str) -> Ticket:
        """A new ticket for ``ref``, queued for a loader thread (call under ``_lock``)."""
        if self._closed.is_set():
            raise EngineClosedError("the engine is closed")
        ticket = Ticket(ref)
        self._by_ref[ref] = ticket
        self._jobs.put(ticket)
        return ticket

    def _refresh(self, ref: str) -> None:
        """Re-resolve (and load, if it moved) ``ref`` in the background, single-flight."""
        with self._lock:
            if ref in self._by_ref or self._closed.is_set():
                return
            self._start(ref)

    def forget(self, key: str) -> None:
        """An operator unloaded ``key``: drop it from the LRU and the tag resolutions."""
        with self._lock:
            self._owned.pop(key, None)
            for ref in [r for r, (k, _) in self._resolved.items() if k == key]:
                del self._resolved[ref]

    def touch(self, key: str) -> None:
        with self._lock:
            if key in self._owned:
                self._owned.move_to_end(key)

    # --- loader threads --------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            ticket = self._jobs.get()
            if ticket is None or self._closed.is_set():
                return
            self._work(ticket)

    def _registry(self) -> Any:
        reg = getattr(self._local, "registry", None)
        if reg is None:
            from adapterhub.registry.client import Registry

            reg = Registry(self.registry_url, progress=False)
            self._local.registry = reg
        return reg

    def _work(self, ticket: Ticket) -> None:
        try:
            from adapterhub.registry.names import parse_ref

            reg = self._registry()
            parsed = parse_ref(ticket.ref)
            if parsed.version is not None:
                name, version = parsed.name, parsed.version
            else:
                name, version = reg.resolve(reg.store(), parsed)
            key = f"{name}@{version}"
            with self._lock:
                if parsed.version is None:
                    self._resolved[ticket.ref] = (key, time.monotonic())
                leader = self._by_key.get(key)
                if leader is None and key not in self.host.loaded():
                    self._by_key[key] = ticket
            if key in self.host.loaded() and leader is None:
                self._finish_ref(ticket, key, None)
                return
            if leader is not None:  # someone else is loading this version: share its outcome
                # The leader is settled on the engine thread (or by close()); wait in
                # slices so a closing engine never leaves this thread waiting forever.
                while not leader.wait(0.1):
                    if self._closed.is_set():
                        return
                self._finish_ref(ticket, leader.key, leader.error)
                return
            _, directory = reg.fetch(key, trust=self.trust)
            prepared = self.host.prepare(directory, name=key)
        except BaseException as exc:  # noqa: BLE001 - handed to the requests that asked
            self._commits.put((ticket, None, exc))
        else:
            if self._closed.is_set():  # closed while it loaded: nobody will commit it
                self.host.discard(prepared)
                return
            self._commits.put((ticket, prepared, None))
        self._wake()

    def _finish_ref(self, ticket: Ticket, key: str | None, error: BaseException | None) -> None:
        with self._lock:
            if self._by_ref.get(ticket.ref) is ticket:
                del self._by_ref[ticket.ref]
        ticket._settle(key, error)
        self._wake()

    # --- engine thread ---------------------------------------------------------------------
    def has_commits(self) -> bool:
        return not self._commits.empty()

    def commit_ready(self) -> int:
        """Publish every prepared load (call between steps); returns how many settled."""
        n = 0
        while True:
            try:
                ticket, prepared, error = self._commits.get_nowait()
            except queue.Empty:
                return n
            n += 1
            key: str | None = None
            if prepared is not None:
                try:
                    key = self.host.commit(prepared).name
                except BaseException as exc:  # noqa: BLE001
                    error = exc
            took = time.perf_counter() - ticket.started
            if error is not None:
                self.load_failures += 1
                log.warning("adapter load failed", extra={"fields": {
                    "adapter": ticket.ref, "seconds": round(took, 3), "error": f"{type(error).__name__}: {error}",
                }})
            else:
                self.loads += 1
                assert key is not None and prepared is not None
                with self._lock:
                    self._owned[key] = None
                log.info("adapter loaded", extra={"fields": {
                    "adapter": key, "ref": ticket.ref, "seconds": round(took, 3), "bytes": prepared.entry.nbytes,
                }})
            with self._lock:
                for table in (self._by_key, self._by_ref):
                    for k, t in list(table.items()):
                        if t is ticket:
                            del table[k]
            ticket._settle(key, error)

    def trim(self) -> None:
        """Unload least recently used engine-loaded adapters past ``max_loaded``."""
        with self._lock:
            excess = len(self._owned) - self.max_loaded
            candidates = list(self._owned) if excess > 0 else []
        for key in candidates:
            if excess <= 0:
                break
            try:
                entry = self.host.entry(key)
            except AdapterUnloadedError:
                with self._lock:
                    self._owned.pop(key, None)
                excess -= 1
                continue
            if entry.refs > 0:
                continue  # in use: never evicted
            self.host.unload(key)
            with self._lock:
                self._owned.pop(key, None)
            self.evictions += 1
            excess -= 1
            log.info("adapter evicted", extra={"fields": {"adapter": key, "bytes": entry.nbytes, "loaded": len(self._owned)}})

    def close(self, timeout: float = CLOSE_WAIT_S) -> None:
        """Stop loading: outstanding tickets fail with :class:`EngineClosedError` at once;
        loader threads get ``timeout`` seconds in all, then are left (daemons)."""
        self._closed.set()
        for _ in self._threads:
            self._jobs.put(None)
        closed = EngineClosedError("the engine is closed")
        with self._lock:
            pending = {id(t): t for table in (self._by_ref, self._by_key) for t in table.values()}
            self._by_ref.clear()
            self._by_key.clear()
        for ticket in pending.values():
            if not ticket.done:
                ticket._settle(None, closed)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            log.warning("loader threads still busy at close; left to end with the process",
                        extra={"fields": {"threads": ",".join(stuck)}})
        while True:  # loads prepared but never committed give back their staged slots
            try:
                _, prepared, _ = self._commits.get_nowait()
            except queue.Empty:
                return
            if prepared is not None:
                self.host.discard(prepared)
