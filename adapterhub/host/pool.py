"""The adapter pool: which adapter versions are loaded, resident, and in use.

Two tiers, as on a GPU server: every loaded adapter keeps its validated tensors in host
memory (the *plan*); a bounded subset is *resident* in its method's runtime beside the
base (on the device). Residency is managed LRU under ``device_budget_bytes``. An entry
with requests in flight (``refs > 0``) is never evicted or mutated; replacing a name with
a new version retires the old entry, which is dropped once its last request finishes.

The pool only does bookkeeping; the host performs the runtime calls (under its forward
lock) that the pool's decisions require.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from adapterhub.errors import AdapterUnloadedError
from adapterhub.manifest import Manifest
from adapterhub.protocols.method import Method, SwapPlan

_ids = itertools.count(1)


@dataclass(eq=False)
class PoolEntry:
    """One loaded adapter version. ``uid`` is unique per load (name@version#n)."""

    name: str
    version: str | None
    manifest: Manifest
    method: Method
    plan: SwapPlan | None
    """Validated tensors ready to apply; dropped once applied (the runtime holds them)."""
    host_tensors: dict[str, Any] | None = None
    """Host-memory tier on an accelerator (pinned CPU tensors) for fast re-residency after
    eviction. On a CPU host this is None: host memory *is* the device, so an evicted
    adapter is re-read (and re-verified) from ``directory`` instead of held twice."""
    source: str = ""
    directory: str = ""
    nbytes: int = 0
    uid: str = ""
    refs: int = 0
    resident: bool = False
    retired: bool = False
    swap_ms: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def label(self) -> str:
        # An engine keys registry loads by ``name@version`` already (two versions of one
        # name can then be resident at once); don't repeat the version.
        if not self.version or self.name.endswith("@" + self.version):
            return self.name
        return f"{self.name}@{self.version}"


class AdapterPool:
    """Thread-safe bookkeeping of loaded adapters (names → current entry)."""

    def __init__(self, device_budget_bytes: int | None = None) -> None:
        self.device_budget_bytes = device_budget_bytes
        self._lock = threading.RLock()
        self._current: dict[str, PoolEntry] = {}
        self._retired: list[PoolEntry] = []
        # LRU order over resident entries, most recently used last.
        self._lru: OrderedDict[str, PoolEntry] = OrderedDict()

    # --- naming ---------------------------------------------------------------------
    @staticmethod
    def new_uid(name: str, version: str | None) -> str:
        return f"{name}@{version or '-'}#{next(_ids)}"

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._current)

    def entries(self) -> list[PoolEntry]:
        with self._lock:
            return [self._current[n] for n in sorted(self._current)]

    def get(self, name: str) -> PoolEntry:
        with self._lock:
            try:
                return self._current[name]
            except KeyError:
                raise AdapterUnloadedError(
                    f"adapter {name!r} is not loaded (loaded: {', '.join(sorted(self._current)) or 'none'})"
                ) from None

    # --- requests ---------------------------------------------------------------------
    def acquire(self, names: list[str | None]) -> list[PoolEntry | None]:
        """Pin the current version of each named adapter for one request (atomically)."""
        with self._lock:
            entries = [None if n is None else self.get(n) for n in names]
            for e in entries:
                if e is not None:
                    e.refs += 1
            return entries

    def release(self, entries: list[PoolEntry | None]) -> list[PoolEntry]:
        """Unpin; returns retired entries that are now unused and must leave the runtime."""
        with self._lock:
            for e in entries:
                if e is not None:
                    e.refs -= 1
            return self._collect_retired()

    def _collect_retired(self) -> list[PoolEntry]:
        done = [e for e in self._retired if e.refs == 0]
        self._retired = [e for e in self._retired if e.refs > 0]
        for e in done:
            self._lru.pop(e.uid, None)
        return done

    # --- membership -------------------------------------------------------------------------
    def add(self, entry: PoolEntry) -> list[PoolEntry]:
        """Make ``entry`` the current version of its name; returns entries to drop now."""
        with self._lock:
            old = self._current.get(entry.name)
            self._current[entry.name] = entry
            if old is not None:
                old.retired = True
                self._retired.append(old)
            return self._collect_retired()

    def remove(self, name: str) -> list[PoolEntry]:
        """Unload ``name``: new requests fail at once; in-flight ones finish first."""
        with self._lock:
            entry = self.get(name)
            del self._current[name]
            entry.retired = True
            self._retired.append(entry)
            return self._collect_retired()

    # --- residency ---------------------------------------------------------------------------
    def touch(self, entry: PoolEntry) -> None:
        with self._lock:
            if entry.resident:
                self._lru.pop(entry.uid, None)
                self._lru[entry.uid] = entry

    def mark_resident(self, entry: PoolEntry, resident: bool) -> None:
        with self._lock:
            entry.resident = resident
            if resident:
                self._lru[entry.uid] = entry
            else:
                self._lru.pop(entry.uid, None)

    def resident_bytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._lru.values())

    def eviction_candidates(self, incoming_bytes: int, keep: set[str]) -> list[PoolEntry]:
        """LRU entries to evict so that ``incoming_bytes`` fits the device budget.

        Entries in ``keep`` (needed by the request being served) and entries with
        requests in flight are never chosen. If the budget cannot be met without them
        the adapter is still made resident: correctness beats the budget.
        """
        if self.device_budget_bytes is None:
            return []
        with self._lock:
            need = self.resident_bytes() + incoming_bytes - self.device_budget_bytes
            out: list[PoolEntry] = []
            for uid, e in self._lru.items():
                if need <= 0:
                    break
                if uid in keep or e.refs > 0:
                    continue
                out.append(e)
                need -= e.nbytes
            return out
