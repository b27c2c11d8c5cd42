"""The hub's one query layer: an in-memory, rebuildable index of a store.

Pages and the JSON API both search through :class:`QueryCache`. It reads the store only
through the public :class:`~adapterhub.protocols.store.Store` calls (names, versions,
tags, manifests), so the hub never sees more than a client could, and it holds nothing
that cannot be rebuilt from the store: several hub processes can serve one bucket, each
with its own cache.

Manifests are immutable once a version exists, so a refresh lists names, versions and
tags but only reads the manifests of versions it has not seen. A snapshot older than the
TTL is still served while one background thread refreshes it (stale-while-revalidate):
no request waits on a listing of a large bucket, except the very first.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from adapterhub.registry.client import parse_manifest
from adapterhub.registry.index import Condition, parse_where
from adapterhub.registry.names import DEFAULT_TAG, version_key

from adapterhub.manifest import Manifest
from adapterhub.protocols.store import Store

log = logging.getLogger("adapterhub.hub")

# Preferred headline metric of a task, first match wins; otherwise the first metric by name.
_HEADLINE_ORDER = ("accuracy", "rougeL", "rougeLsum", "bleu", "chrf", "exact_match", "f1")
MAX_PER_PAGE = 200


@dataclass(frozen=True)
class Entry:
    """One version of one adapter, with what a result row or a filter needs."""

    name: str
    version: str
    manifest: Manifest
    tags: tuple[str, ...]
    size: int
    haystack: str  # lowercased name + description, for free-text search
    raw: bytes = b""  # the manifest bytes as stored (what a signature covers)
    signatures: tuple[bytes, ...] = ()  # as listed at the last refresh; judged per search (trust may change)

    @classmethod
    def of(cls, name: str, version: str, manifest: Manifest, tags: Sequence[str] = (), raw: bytes = b"",
           signatures: Sequence[bytes] = ()) -> Entry:
        return cls(name=name, version=version, manifest=manifest, tags=tuple(sorted(tags)),
                   size=sum(f.size for f in manifest.files), haystack=f"{name}\n{manifest.description}".lower(),
                   raw=raw, signatures=tuple(signatures))

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def metric(self, metric: str, task: str | None = None) -> float | None:
        """The value of ``metric`` (on ``task``, or on the adapter's own task first, then any)."""
        metrics = self.manifest.metrics
        if task is not None:
            return metrics.get(task, {}).get(metric)
        own = self.manifest.task
        if own is not None and metric in metrics.get(own, {}):
            return metrics[own][metric]
        for values in metrics.values():
            if metric in values:
                return values[metric]
        return None

    def headline(self) -> tuple[str, str, float] | None:
        """(task, metric, value) that stands for this adapter in a result row."""
        # "training" holds the trainer's own numbers (loss, tokens/s): not a result to
        # headline an adapter with.
        metrics = {t: v for t, v in self.manifest.metrics.items() if t != "training" and v}
        if not metrics:
            return None
        task = self.manifest.task if self.manifest.task in metrics else sorted(metrics)[0]
        values = metrics[task]
        if not values:
            return None
        metric = next((m for m in _HEADLINE_ORDER if m in values), sorted(values)[0])
        return task, metric, values[metric]

    def summary(self) -> dict[str, Any]:
        """The JSON row of a search result."""
        m = self.manifest
        head = self.headline()
        return {
            "name": self.name, "version": self.version, "ref": self.ref, "task": m.task,
            "method": m.method, "method_kind": m.method_kind, "base": m.base.name,
            "base_sha256": m.base.weights_sha256, "size": self.size,
            "trainable_parameters": m.trainable_parameters,
            "trainable_share": m.trainable_parameters / m.base.num_parameters if m.base.num_parameters else None,
            "description": m.description, "created": m.created.isoformat(), "tags": list(self.tags),
            "metrics": m.metrics,
            "headline": None if head is None else {"task": head[0], "metric": head[1], "value": head[2]},
        }


@dataclass(frozen=True)
class Snapshot:
    """The store's index at one moment: every readable version, newest-last per name."""

    versions: Mapping[str, tuple[Entry, ...]]
    tags: Mapping[str, Mapping[str, str]]
    latest: Mapping[str, Entry]
    built_at: float
    unreadable: tuple[str, ...] = ()  # refs whose manifest did not parse (``verify`` reports them)

    facet_values: Mapping[str, list[str]] = field(default_factory=dict)
    """The values the browse filters offer, computed once per snapshot (not per page)."""

    def facets(self) -> Mapping[str, list[str]]:
        return self.facet_values


def _facets(latest: Mapping[str, Entry], tags: Mapping[str, Mapping[str, str]]) -> dict[str, list[str]]:
    entries = latest.values()
    return {
        "task": sorted({e.manifest.task for e in entries if e.manifest.task}),
        "method": sorted({e.manifest.method for e in entries}),
        "base": sorted({e.manifest.base.name for e in entries}),
        "tag": sorted({t for name_tags in tags.values() for t in name_tags}),
        "metric": sorted({k for e in entries for v in e.manifest.metrics.values() for k in v}),
    }


@dataclass(frozen=True)
class SearchQuery:
    """A browse/search request; every field optional."""

    q: str = ""
    task: str | None = None
    method: str | None = None
    base: str | None = None
    tag: str | None = None
    where: tuple[Condition, ...] = ()
    sort: str = "name"  # "name", "created", "size", "trainable", or a metric ("task.metric" narrows)
    descending: bool | None = None  # None: metrics and dates high first, names A→Z
    page: int = 1
    per_page: int = 50
    all_versions: bool = False
    no_forgotten: bool = False
    """Only adapters whose forgetting report forgets no task (see :func:`forgets_nothing`)."""
    signed: bool | None = None
    """``signed:yes`` / ``signed:no`` in ``q`` (or ``signed=yes``): signed by a key the hub
    trusts for the name (without a trust file: any signature stored)."""

    @classmethod
    def parse(cls, params: Mapping[str, str], where: Iterable[str] = ()) -> SearchQuery:
        """From query-string values; raises ``ConfigError`` with one line for bad input."""
        from adapterhub.errors import ConfigError

        def num(key: str, default: int, lo: int, hi: int) -> int:
            raw = params.get(key) or ""
            if not raw:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"{key} must be an integer, got {raw[:40]!r}") from None
            return min(max(value, lo), hi)

        order = (params.get("order") or "").lower()
        if order not in ("", "asc", "desc"):
            raise ConfigError(f"order must be asc or desc, got {order[:40]!r}")
        conds = tuple(parse_where(w) for w in where if w.strip())
        q, signed = _signed_filter((params.get("q") or "").strip()[:200], params.get("signed") or "")
        return cls(
            q=q,
            signed=signed,
            task=params.get("task") or None,
            method=params.get("method") or None,
            base=params.get("base") or None,
            tag=params.get("tag") or None,
            where=conds,
            sort=(params.get("sort") or "name")[:200],
            descending=None if not order else order == "desc",
            page=num("page", 1, 1, 1_000_000),
            per_page=num("per_page", 50, 1, MAX_PER_PAGE),
            all_versions=(params.get("all_versions") or "").lower() in ("1", "true", "yes"),
            no_forgotten=(params.get("no_forgotten") or "").lower() in ("1", "true", "yes", "on"),
        )


@dataclass
class Results:
    total: int
    page: int
    per_page: int
    entries: list[Entry] = field(default_factory=list)

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))


_OPS = {
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, "=": lambda a, b: a == b, "!=": lambda a, b: a != b,
}


def forgets_nothing(m: Manifest) -> bool:
    """The manifest's forgetting report marks no task forgotten. No report: unknown, so
    False. A report from before intervals counts a point drop over its threshold
    (``flagged``) as forgotten: the stricter reading, as its drops were never resolved."""
    report = m.forgetting
    return report is not None and not any(r.verdict == "forgotten" or r.flagged for r in report.rows)


def _matches(e: Entry, query: SearchQuery, words: Sequence[str]) -> bool:
    m = e.manifest
    if query.no_forgotten and not forgets_nothing(m):
        return False
    if query.task is not None and m.task != query.task:
        return False
    if query.method is not None and m.method != query.method:
        return False
    if query.base is not None:
        b = query.base
        if m.base.name != b and not (len(b) >= 4 and m.base.weights_sha256.startswith(b.lower())):
            return False
    if query.tag is not None and query.tag not in e.tags:
        return False
    if any(w not in e.haystack for w in words):
        return False
    for c in query.where:
        if c.task is not None:
            v = m.metrics.get(c.task, {}).get(c.metric)
            if v is None or not _OPS[c.op](v, c.value):
                return False
        elif not any(c.metric in vals and _OPS[c.op](vals[c.metric], c.value) for vals in m.metrics.values()):
            return False
    return True


def _signed_filter(q: str, param: str) -> tuple[str, bool | None]:
    """``q`` without its ``signed:yes|no`` words, and the filter they (or ``signed=``) ask for."""
    from adapterhub.errors import ConfigError

    chosen: bool | None = None
    words = []
    for word in q.split():
        key, sep, value = word.partition(":")
        if sep and key.lower() == "signed":
            param = value
        else:
            words.append(word)
    if param:
        if param.lower() not in ("yes", "no", "true", "false", "1", "0"):
            raise ConfigError(f"signed must be yes or no, got {param[:40]!r}")
        chosen = param.lower() in ("yes", "true", "1")
    return " ".join(words), chosen


def search(snapshot: Snapshot, query: SearchQuery, visible: Callable[[str], bool] | None = None,
           is_signed: Callable[[Entry], bool] | None = None) -> Results:
    """Filter, sort and page one snapshot (pure: no store access).

    ``visible`` hides adapter names the caller may not read (a token limited to
    ``team-a/*`` finds nothing else, and the total does not count what it cannot see).
    ``is_signed`` decides ``signed:yes`` (default: any signature stored).
    """
    pool: Iterable[Entry]
    if query.all_versions:
        pool = (e for versions in snapshot.versions.values() for e in versions)
    else:
        pool = snapshot.latest.values()
    words = query.q.lower().split()
    hits = [e for e in pool if _matches(e, query, words) and (visible is None or visible(e.name))]
    if query.signed is not None:
        signed = is_signed or (lambda e: bool(e.signatures))
        hits = [e for e in hits if signed(e) == query.signed]
    key = query.sort
    if key == "name":
        hits.sort(key=lambda e: (e.name, version_key(e.version)), reverse=bool(query.descending))
    elif key in ("created", "size", "trainable"):
        def attr(e: Entry) -> Any:
            return e.manifest.created if key == "created" else e.size if key == "size" else e.manifest.trainable_parameters
        hits.sort(key=lambda e: (attr(e), e.name), reverse=query.descending is not False)
    else:
        task, _, metric = key.rpartition(".")
        values = {id(e): e.metric(metric, task or None) for e in hits}
        have = [e for e in hits if values[id(e)] is not None]
        missing = sorted((e for e in hits if values[id(e)] is None), key=lambda e: e.name)
        # Ties broken by name, A→Z, whichever way the metric runs; adapters without the
        # metric always come last.
        have.sort(key=lambda e: e.name)
        have.sort(key=lambda e: values[id(e)], reverse=query.descending is not False)  # type: ignore[arg-type, return-value]
        hits = have + missing
    start = (query.page - 1) * query.per_page
    return Results(total=len(hits), page=query.page, per_page=query.per_page, entries=hits[start:start + query.per_page])


class QueryCache:
    """The current :class:`Snapshot` of a store, refreshed in the background past ``ttl_s``.

    Threads: request handlers on the event loop call only :meth:`current` (which never
    lists the store on the loop: a build runs in a worker thread), :meth:`invalidate`
    and :meth:`forget`; builds run in worker threads and the background refresh thread.
    Every field below is read and written under ``_lock`` (short, never held across a
    store call); ``_build_lock`` only keeps two builds from listing the store at once.
    """

    def __init__(self, store: Store, ttl_s: float = 30.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()  # one build at a time
        self._manifests: dict[tuple[str, str], tuple[Manifest, bytes]] = {}
        self._forgotten: list[tuple[str, str | None]] = []  # forget() calls during the running build
        self._snapshot: Snapshot | None = None
        self._refreshing = False
        self._dirty = False

    def cached(self) -> Snapshot | None:
        """The snapshot to serve now without touching the store; None: a build is needed
        first (none yet, or a write went through this hub). Starts a background refresh
        when the snapshot is older than the TTL (it is still served meanwhile)."""
        with self._lock:
            snap = self._snapshot
            if snap is None or self._dirty:
                return None
            if time.monotonic() - snap.built_at > self.ttl_s and not self._refreshing:
                self._refreshing = True
                threading.Thread(target=self._background, name="hub-index-refresh", daemon=True).start()
            return snap

    async def current(self) -> Snapshot:
        """:meth:`snapshot` for async handlers: the cached one, else built in a worker thread."""
        snap = self.cached()
        if snap is not None:
            return snap
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(self.snapshot)

    def snapshot(self) -> Snapshot:
        """The current snapshot, building it first when needed (blocking: call in a thread)."""
        snap = self.cached()
        if snap is not None:
            return snap
        with self._build_lock:
            with self._lock:
                if self._snapshot is not None and not self._dirty:
                    return self._snapshot  # another thread built it while this one waited
                # Cleared before the build: a write landing during it marks it again.
                self._dirty = False
            return self._rebuild()

    def refresh(self) -> Snapshot:
        """Rebuild now (after a write through this hub, or on demand; blocking)."""
        with self._build_lock:
            with self._lock:
                self._dirty = False
            return self._rebuild()

    def invalidate(self) -> None:
        """A write went through this hub: the next :meth:`snapshot` rebuilds first.

        Cheaper than :meth:`refresh` after every write (a push writes a manifest and one
        or two tags): the listing runs once, on the next read, and this process reads
        its own writes. Other hub processes see them within their TTL.
        """
        with self._lock:
            self._dirty = True

    def forget(self, name: str, version: str | None = None) -> None:
        """Drop cached manifests of a deleted version (or every version of ``name``)."""
        with self._lock:
            self._forgotten.append((name, version))
            for key in [k for k in self._manifests if _forgets(k, name, version)]:
                del self._manifests[key]

    def _background(self) -> None:
        try:
            with self._build_lock:
                self._rebuild()
        except Exception:  # noqa: BLE001 - a failed refresh keeps serving the old snapshot
            log.exception("hub index refresh failed; serving the previous snapshot")
        finally:
            with self._lock:
                self._refreshing = False

    def _rebuild(self) -> Snapshot:
        """Under ``_build_lock``: list the store (no lock held) and install the result."""
        with self._lock:
            known = dict(self._manifests)
            self._forgotten.clear()
        snap, manifests = self._build(known)
        with self._lock:
            # A manifest forgotten while this build ran may have been read before the
            # delete: it is not kept (the forget's invalidate() rebuilds once more).
            for name, version in self._forgotten:
                for key in [k for k in manifests if _forgets(k, name, version)]:
                    del manifests[key]
            self._manifests = manifests
            self._snapshot = snap
        return snap

    def _build(self, known: dict[tuple[str, str], tuple[Manifest, bytes]]) -> tuple[Snapshot, dict[tuple[str, str], tuple[Manifest, bytes]]]:
        """A snapshot of the store, reading only manifests not in ``known``; and the manifests it holds."""
        manifests: dict[tuple[str, str], tuple[Manifest, bytes]] = {}
        list_signatures = getattr(self.store, "list_signatures", None)  # optional (SignatureStore)
        versions: dict[str, tuple[Entry, ...]] = {}
        tags_of: dict[str, dict[str, str]] = {}
        latest: dict[str, Entry] = {}
        unreadable: list[str] = []
        for name in sorted(self.store.list_names()):
            names_versions = sorted(self.store.list_versions(name), key=version_key)
            if not names_versions:
                continue
            tags = dict(self.store.list_tags(name))
            by_version: dict[str, list[str]] = {}
            for t, v in tags.items():
                by_version.setdefault(v, []).append(t)
            entries = []
            for v in names_versions:
                key = (name, v)
                cached = known.get(key)
                if cached is None:
                    try:
                        raw = self.store.get_version(name, v)
                        cached = (parse_manifest(raw, f"{name}@{v}"), raw)
                    except Exception as exc:  # noqa: BLE001 - one bad manifest must not hide the rest
                        unreadable.append(f"{name}@{v}")
                        log.warning("hub: skipping %s@%s: %s", name, v, exc)
                        continue
                manifests[key] = cached
                # Signatures are listed on every refresh: a counter-signature is added
                # after the version exists (and one may be deleted).
                sigs: list[bytes] = []
                if list_signatures is not None:
                    try:
                        sigs = list_signatures(name, v)
                    except Exception as exc:  # noqa: BLE001 - shown as unsigned, never hides the version
                        log.warning("hub: cannot list signatures of %s@%s: %s", name, v, exc)
                entries.append(Entry.of(name, v, cached[0], by_version.get(v, ()), cached[1], sigs))
            if not entries:
                continue
            versions[name] = tuple(entries)
            tags_of[name] = tags
            pinned = tags.get(DEFAULT_TAG)
            latest[name] = next((e for e in entries if e.version == pinned), entries[-1])
        # Only what the store listed is kept: a deleted, then re-created version is read afresh.
        snap = Snapshot(versions=versions, tags=tags_of, latest=latest, built_at=time.monotonic(),
                        unreadable=tuple(unreadable), facet_values=_facets(latest, tags_of))
        return snap, manifests


def _forgets(key: tuple[str, str], name: str, version: str | None) -> bool:
    return key[0] == name and (version is None or key[1] == version)
