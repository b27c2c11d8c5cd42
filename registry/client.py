"""The registry facade: push, pull, search and housekeeping over any store.

``Registry()`` works on the local store (``adapterhub.paths.registry_dir()``);
``Registry("s3://bucket/prefix")`` or ``Registry("team")`` (a configured remote) makes
that store the default target of ``push``/``pull``. Pulls from remote stores land in a
local cache store per remote (``<registry>/remotes/<slug>/``), so a pinned version that
was pulled once is served offline afterwards.

Push order is what makes crashes harmless: blobs first, then the manifest (the
conditional create that makes the version exist), then tags. A push killed at any point
leaves either no version or a complete one; orphaned blobs are reclaimed by ``gc``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from adapterhub.registry import remotes
from adapterhub.registry.faults import crash_point
from adapterhub.registry.index import Index
from adapterhub.registry.local import LocalStore
from adapterhub.registry.names import (
    DEFAULT_TAG,
    Ref,
    latest_version,
    next_version,
    parse_ref,
    validate_name,
    validate_tag,
    validate_version,
    version_key,
)

from adapterhub import paths
from adapterhub.errors import (
    AdapterNotFoundError,
    ConfigError,
    IntegrityError,
    InvalidNameError,
    SignatureError,
    VersionExistsError,
)

if TYPE_CHECKING:  # pydantic, the protocols and the thread pool load on first use (not for `search`)
    from concurrent.futures import ThreadPoolExecutor

    from adapterhub.registry.maintenance import GcPlan
    from adapterhub.registry.trust import TrustPolicy, Verdict
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

    from adapterhub.manifest import Manifest
    from adapterhub.protocols.store import Progress, Store


def parse_manifest(data: bytes, source: str) -> Manifest:
    from adapterhub.manifest import parse_manifest as parse

    return parse(data, source)

PROGRESS_MIN_BYTES = 4 * 1024 * 1024  # progress bars only for transfers worth watching
MAX_RECORD_BYTES = 1024 * 1024
GC_GRACE_S = 3600.0


@dataclass(frozen=True)
class Published:
    """What a push did: the ``name@version`` and whether it created it (False: already up to date)."""

    ref: str
    created: bool


@contextmanager
def _progress(total: int, desc: str, enabled: bool) -> Iterator[Progress | None]:
    if not enabled or total < PROGRESS_MIN_BYTES:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False, disable=None) as bar:
        yield bar.update


def read_records(store: Store, name: str, version: str) -> list[dict[str, Any]]:
    """The version's evaluation records that parse as JSON objects. Records are
    append-only user content: one that does not parse is skipped, never fatal to a show."""
    out = []
    for raw in store.list_records(name, version):
        try:
            rec = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


class Registry:
    def __init__(self, url: str | None = None, *, root: str | Path | None = None, progress: bool = True) -> None:
        self.local = LocalStore(root if root is not None else paths.registry_dir())
        self.index = Index(self.local)
        self.default_url = url
        self.progress = progress
        self._stores: dict[str, Store] = {}
        self._caches: dict[str, LocalStore] = {}
        self._pool: ThreadPoolExecutor | None = None

    # -- stores -----------------------------------------------------------------------
    def store(self, url_or_remote: str | None = None) -> Store:
        """The store for a URL/remote name (``None``: this registry's default)."""
        target = url_or_remote if url_or_remote is not None else self.default_url
        if target is None:
            return self.local
        if target not in self._stores:
            url = remotes.resolve_url(target)
            if url == self.local.url:
                return self.local
            self._stores[target] = remotes.open_store(url)
        return self._stores[target]

    @classmethod
    def for_store(cls, store: Store, *, progress: bool = False) -> Registry:
        """A registry whose default target is ``store``: a local store becomes the
        registry's own (so writes keep its search index), any other is routed by URL."""
        if isinstance(store, LocalStore):
            reg = cls(root=store.root, progress=progress)
            reg.local, reg.index = store, Index(store)
            return reg
        reg = cls(store.url, progress=progress)
        reg.use_store(store.url, store)
        return reg

    def use_store(self, url_or_remote: str, store: Store) -> None:
        """Route ``url_or_remote`` to an already-built store (e.g. an http store given an
        explicit token) instead of building one from the catalog on first use."""
        self._stores[url_or_remote] = store

    def _is_local(self, store: Store) -> bool:
        return store is self.local

    def cache_for(self, store: Store) -> LocalStore:
        if store is self.local:
            return self.local
        slug = hashlib.sha256(store.url.encode()).hexdigest()[:16]
        if slug not in self._caches:
            self._caches[slug] = LocalStore(self.local.root / "remotes" / slug, durable=False)
        return self._caches[slug]

    # -- resolution -------------------------------------------------------------------
    @staticmethod
    def resolve(store: Store, ref: Ref | str) -> tuple[str, str]:
        """(name, version) for a reference, looked up once in ``store``."""
        r = parse_ref(ref) if isinstance(ref, str) else ref
        if r.version is not None:
            return r.name, r.version
        if r.tag is not None:
            return r.name, store.get_tag(r.name, r.tag)
        try:
            return r.name, store.get_tag(r.name, DEFAULT_TAG)
        except AdapterNotFoundError:
            pass
        best = latest_version(store.list_versions(r.name))
        if best is None:
            raise AdapterNotFoundError(f"no adapter named {r.name!r} in {store.url}")
        return r.name, best

    # -- push -------------------------------------------------------------------------
    def push(
        self,
        adapter_dir: str | Path,
        name: str,
        version: str | None = None,
        tag: str | None = None,
        to: str | None = None,
    ) -> str:
        """Validate and publish an adapter directory; returns ``name@version``."""
        return self.publish(adapter_dir, name, version=version, tag=tag, to=to).ref

    def publish(
        self,
        adapter_dir: str | Path,
        name: str,
        version: str | None = None,
        tag: str | None = None,
        to: str | None = None,
    ) -> Published:
        """:meth:`push`, also saying whether the version was created or already held these bytes."""
        from adapterhub.registry.validate import read_checked

        validate_name(name)
        if version is not None:
            validate_version(version)
        if tag is not None:
            validate_tag(tag)
        src = Path(adapter_dir)
        if not src.is_dir():
            raise AdapterNotFoundError(f"{src}: not an adapter directory")
        manifest, verified = read_checked(src)
        store = self.store(to)
        total = sum(f.size for f in manifest.files)
        # The current `latest` is read while the blobs upload (one round trip hidden
        # behind the transfer); it only decides whether `latest` moves afterwards.
        current_latest = self._executor().submit(self._read_tag, store, name, DEFAULT_TAG)
        # Stores that can take bytes get the weights exactly as validation read and
        # hashed them: no second read or hash, and no window for the file to change.
        put_verified = getattr(store, "put_blob_verified", None)
        with _progress(total, f"push {name}", self.progress) as bar:
            for entry in manifest.files:
                data = verified.get(entry.path)
                if data is not None and put_verified is not None:
                    put_verified(entry.sha256, data, bar)
                else:
                    self.put_blob(entry.sha256, src / entry.path, to, bar)
        crash_point("after-blobs")
        final, created = self._create_version(store, manifest, name, version)
        crash_point("after-manifest")
        self._after_create(store, final, tag, current_latest.result())
        return Published(f"{name}@{final.version}", created)

    def _executor(self) -> ThreadPoolExecutor:
        # One long-lived helper thread: starting a thread per push costs more (several
        # ms on a busy machine) than the round trip it hides.
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adapterhub-registry")
        return self._pool

    @staticmethod
    def _read_tag(store: Store, name: str, tag: str) -> str | None:
        try:
            return store.get_tag(name, tag)
        except (AdapterNotFoundError, IntegrityError):
            return None

    def _create_version(self, store: Store, manifest: Manifest, name: str, version: str | None) -> tuple[Manifest, bool]:
        """(the stored manifest, whether this call created it)."""
        # An automatic version retries on a lost race: two pushers computing the same
        # next version get two consecutive ones instead of an error.
        for _ in range(32):
            v = version or next_version(store.list_versions(name))
            final = manifest.model_copy(update={"name": name, "version": v})
            data = final.to_json().encode()
            try:
                self._put_version(store, name, v, data, final)
                return final, True
            except VersionExistsError:
                if version is not None:
                    # A retried upload of the same bytes succeeds as a no-op, as in
                    # container and package registries; different bytes stay refused.
                    if self._holds_same(store, name, v, final):
                        return final, False
                    raise VersionExistsError(f"{name}@{v} already exists in {store.url} with different contents (versions are immutable: push a new version)") from None
        raise VersionExistsError(f"could not find a free version for {name} after 32 tries (concurrent pushes?)")

    def _put_version(self, store: Store, name: str, version: str, data: bytes, manifest: Manifest | None) -> None:
        """The conditional create, with the local index updated inside the same change
        (pending marker first: a process killed in between leaves the index rebuilt)."""
        if store is not self.local:
            store.put_version(name, version, data)
            return
        with self.index.change():
            store.put_version(name, version, data)
            if manifest is None:
                try:
                    manifest = parse_manifest(data, f"{name}@{version}")
                except ValueError:
                    return  # as a rebuild does: unparseable manifests are not indexed
            if manifest.name == name and manifest.version == version:
                self.index.add_version(manifest)

    # -- the steps of a push, one call each (a server publishing for a client: the hub) ------
    def put_blob(self, digest: str, source: Path, to: str | None = None, progress: Progress | None = None) -> None:
        """Store the file ``source`` as blob ``digest``; the store verifies the sha256."""
        self.store(to).put_blob(digest, source, progress)

    def check_version(self, name: str, version: str, data: bytes, to: str | None = None) -> Manifest:
        """The checks :meth:`push` makes, on manifest bytes whose blobs are already in
        the store (``registry/received.py``); ManifestError / IntegrityError if refused."""
        from adapterhub.registry.received import check_received

        return check_received(self.store(to), validate_name(name), validate_version(version), data)

    def create_version(self, name: str, version: str, data: bytes, to: str | None = None, manifest: Manifest | None = None) -> None:
        """Create ``name@version`` from manifest bytes, only if it does not exist
        (VersionExistsError otherwise, whatever the bytes); the local index follows."""
        self._put_version(self.store(to), validate_name(name), validate_version(version), data, manifest)

    def delete_version(self, name: str, version: str, to: str | None = None) -> None:
        """Delete one version's manifest (tags and blobs are left: see :meth:`rm`, ``gc``)."""
        store = self.store(to)
        if store is self.local:
            with self.index.change():
                store.delete_version(name, version)
                self.index.remove_version(name, version)
        else:
            store.delete_version(name, version)

    def add_record(self, name: str, version: str, data: bytes, to: str | None = None) -> str:
        """Append raw record bytes (at most :data:`MAX_RECORD_BYTES`) to a version; its id."""
        if len(data) > MAX_RECORD_BYTES:
            raise ConfigError(f"evaluation record for {name}@{version} is {len(data)} bytes, over {MAX_RECORD_BYTES}")
        return self.store(to).add_record(name, version, data)

    def delete_blob(self, digest: str, to: str | None = None) -> None:
        self.store(to).delete_blob(digest)

    def blob_size(self, digest: str, from_: str | None = None) -> int | None:
        """A blob's stored size; None when absent; -1 when the store has it but cannot say."""
        from adapterhub.registry.received import stored_size

        return stored_size(self.store(from_), digest)

    def open_blob(self, digest: str, size: int | None = None, from_: str | None = None) -> tuple[BinaryIO, int]:
        """An open file of a blob's bytes and its size (blocking). A local store's blob
        file is opened as it is (verified when written); any other store's blob is fetched
        and verified (``size`` needed) into a temp file, unlinked at once."""
        import tempfile

        store = self.store(from_)
        if isinstance(store, LocalStore):
            try:
                fh = open(store.blob_path(digest), "rb")
            except FileNotFoundError:
                raise AdapterNotFoundError(f"blob {digest} not found") from None
            return fh, os.fstat(fh.fileno()).st_size
        if size is None:
            raise ValueError(f"open_blob of {digest} from {store.url} needs the blob's size")
        fd, name = tempfile.mkstemp(prefix=".adapterhub-blob-")
        os.close(fd)
        try:
            store.get_blob(digest, Path(name), size)  # verified before it lands
            fh = open(name, "rb")
        finally:
            # The open handle keeps the bytes; nothing is left behind whatever happens next.
            Path(name).unlink(missing_ok=True)
        return fh, size

    @staticmethod
    def _holds_same(store: Store, name: str, version: str, final: Manifest) -> bool:
        """Does ``name@version`` in ``store`` already hold exactly this manifest?"""
        try:
            existing = store.get_version(name, version)
        except (AdapterNotFoundError, IntegrityError):
            return False
        if existing == final.to_json().encode():
            return True
        try:  # a store may re-serialise JSON: compare the documents, not the bytes
            return bool(json.loads(existing) == json.loads(final.to_json()))
        except ValueError:
            return False

    def _after_create(self, store: Store, final: Manifest, tag: str | None, current: str | None) -> None:
        name, version = final.name, final.version or ""
        # `latest` moves forward only: an older version published later (a backport)
        # does not take it.
        if current is None or version_key(version) >= version_key(current):
            store.set_tag(name, DEFAULT_TAG, version)
        if tag is not None:
            store.set_tag(name, tag, version)
        if store is self.local:
            self.index.set_tags(name, store.list_tags(name))

    # -- pull -------------------------------------------------------------------------
    def pull(self, ref: str, from_: str | None = None, trust: TrustPolicy | None = None) -> Path:
        """A verified local directory (manifest + files) for ``ref``."""
        return self.fetch(ref, from_, trust)[1]

    def fetch(self, ref: str, from_: str | None = None, trust: TrustPolicy | None = None) -> tuple[str, Path]:
        """Like :meth:`pull`, also returning the resolved ``name@version``. With ``trust``
        (``--require-signed``), nothing is fetched unless a key trusted for the name
        signed the version (SignatureError with the reason otherwise)."""
        if trust is None:
            return self._fetch(ref, from_)
        from adapterhub.registry import signatures

        store = self.store(from_)
        name, version = self.resolve(store, ref)  # pinned: what is checked is what is pulled
        checked = signatures.require(store, name, version, trust)
        key, path = self._fetch(f"{name}@{version}", from_)
        if (path / "manifest.json").read_bytes() != checked:
            raise SignatureError(f"{key} changed while it was pulled; pull again")
        return key, path

    def _fetch(self, ref: str, from_: str | None = None) -> tuple[str, Path]:
        r = parse_ref(ref)
        store = self.store(from_)
        if self._is_local(store):
            name, version = self.resolve(self.local, r)
            return f"{name}@{version}", self.local.open_version(name, version)[0]
        cache = self.cache_for(store)
        if r.version is not None and cache.has_version(r.name, r.version):
            try:
                return str(r), cache.open_version(r.name, r.version)[0]
            except IntegrityError:
                pass  # fetch the damaged blobs again below
        name, version = self.resolve(store, r)  # resolve once: a moving tag cannot mix versions
        raw = store.get_version(name, version)
        manifest = parse_manifest(raw, f"{store.url} {name}@{version}")
        if manifest.name != name or manifest.version != version:
            raise IntegrityError(f"{store.url}: manifest of {name}@{version} names {manifest.name}@{manifest.version}")
        missing = [f for f in manifest.files if not cache.has_blob(f.sha256)]
        with _progress(sum(f.size for f in missing), f"pull {name}@{version}", self.progress) as bar:
            for entry in missing:
                store.get_blob(entry.sha256, cache.blob_path(entry.sha256), entry.size, bar)
        try:
            cache.put_version(name, version, raw)
        except VersionExistsError:
            if cache.get_version(name, version) != raw:
                # The remote version was deleted and re-published; the cache follows it.
                cache.delete_version(name, version)
                cache.put_version(name, version, raw)
        verified = frozenset(f.sha256 for f in missing)
        return f"{name}@{version}", cache.open_version(name, version, verified=verified, known=(raw, manifest))[0]

    # -- signatures (registry/signatures.py; docs/signing.md) ---------------------------
    def sign(self, ref: str, key: EllipticCurvePrivateKey, to: str | None = None) -> tuple[str, str, bool]:
        """Sign a published version; (name@version, signature id, whether it was new)."""
        from adapterhub.registry import signatures

        store = self.store(to)
        name, version = self.resolve(store, ref)
        return (f"{name}@{version}", *signatures.sign(store, name, version, key))

    def put_signature(self, name: str, version: str, data: bytes, to: str | None = None) -> tuple[str, bool]:
        """Attach an existing signature bundle (checked to cover this version); (id, new?)."""
        from adapterhub.registry import signatures

        return signatures.attach(self.store(to), validate_name(name), validate_version(version), data)

    def signatures(self, ref: str, from_: str | None = None) -> tuple[str, list[bytes]]:
        """The signature bundles stored beside the version ``ref`` resolves to."""
        from adapterhub.registry import signatures

        store = self.store(from_)
        name, version = self.resolve(store, ref)
        return f"{name}@{version}", signatures.listed(store, name, version)

    def signature_verdicts(self, ref: str, from_: str | None = None, trust: TrustPolicy | None = None) -> tuple[str, list[Verdict]]:
        """Each stored signature's verdict against ``trust`` (None: not checked)."""
        from adapterhub.registry import signatures

        store = self.store(from_)
        name, version = self.resolve(store, ref)
        return f"{name}@{version}", signatures.verdicts(store, name, version, trust)

    def delete_signature(self, name: str, version: str, sig_id: str, to: str | None = None) -> None:
        from adapterhub.registry import signatures

        signatures.signature_store(self.store(to)).delete_signature(validate_name(name), validate_version(version), sig_id)

    # -- listing and search -------------------------------------------------------------
    def ls(self, from_: str | None = None) -> list[dict[str, Any]]:
        store = self.store(from_)
        if store is self.local:
            return self.index.names()
        out = []
        for name in store.list_names():
            versions = sorted(store.list_versions(name), key=version_key)
            if not versions:
                continue
            tags = store.list_tags(name)
            out.append({"name": name, "versions": versions, "tags": tags, "latest": tags.get(DEFAULT_TAG, versions[-1])})
        return out

    def search(
        self,
        name: str | None = None,
        task: str | None = None,
        method: str | None = None,
        base: str | None = None,
        tag: str | None = None,
        where: Iterable[str] = (),
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        return self.index.search(name=name, task=task, method=method, base=base, tag=tag, where=list(where), limit=limit)

    def show(self, ref: str, from_: str | None = None) -> dict[str, Any]:
        store = self.store(from_)
        name, version = self.resolve(store, ref)
        manifest = parse_manifest(store.get_version(name, version), f"{name}@{version}")
        tags = {t: v for t, v in store.list_tags(name).items() if v == version}
        return {
            "ref": f"{name}@{version}",
            "store": store.url,
            "tags": sorted(tags),
            "versions": sorted(store.list_versions(name), key=version_key),
            "manifest": json.loads(manifest.model_dump_json()),
            "evaluations": read_records(store, name, version),
        }

    # -- tags, records, removal --------------------------------------------------------------
    def tag(self, ref: str, tag: str, to: str | None = None) -> str:
        validate_tag(tag)
        store = self.store(to)
        name, version = self.resolve(store, ref)
        store.get_version(name, version)  # must exist
        store.set_tag(name, tag, version)
        if store is self.local:
            self.index.set_tags(name, store.list_tags(name))
        return f"{name}@{version}"

    def attach_evaluation(self, ref: str, record: dict[str, Any], to: str | None = None) -> str:
        """Attach a JSON record (e.g. a forgetting report) to a published version."""
        store = self.store(to)
        name, version = self.resolve(store, ref)
        try:
            data = json.dumps(record, sort_keys=True, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"evaluation record for {name}@{version} is not plain JSON: {exc}") from None
        return self.add_record(name, version, data, to)

    def evaluations(self, ref: str, from_: str | None = None) -> list[dict[str, Any]]:
        store = self.store(from_)
        name, version = self.resolve(store, ref)
        return read_records(store, name, version)

    def rm(self, ref: str, to: str | None = None, all_versions: bool = False) -> list[str]:
        """Remove ``name@version`` (and tags on it), a tag ``name:tag``, or with
        ``all_versions`` every version of ``name``. Blobs are reclaimed by ``gc``."""
        store = self.store(to)
        r = parse_ref(ref)
        if r.tag is not None:
            store.delete_tag(r.name, r.tag)
            self._reindex_tags(store, r.name)
            return [str(r)]
        if r.version is None and not all_versions:
            raise InvalidNameError(f"refusing to remove every version of {r.name!r}: give NAME@VERSION, NAME:TAG or --all")
        versions = [r.version] if r.version is not None else store.list_versions(r.name)
        if not versions:
            raise AdapterNotFoundError(f"no adapter named {r.name!r} in {store.url}")
        removed = []
        for v in versions:
            store.get_version(r.name, v)  # AdapterNotFoundError before any change
            # Refs before data: tags pointing at the version go first.
            for t, tv in store.list_tags(r.name).items():
                if tv == v:
                    store.delete_tag(r.name, t)
            self.delete_version(r.name, v, to)
            removed.append(f"{r.name}@{v}")
        remaining = store.list_versions(r.name)
        tags = store.list_tags(r.name)
        if remaining and DEFAULT_TAG not in tags:
            store.set_tag(r.name, DEFAULT_TAG, latest_version(remaining) or remaining[0])
        self._reindex_tags(store, r.name)
        return removed

    def _reindex_tags(self, store: Store, name: str) -> None:
        if store is self.local:
            self.index.set_tags(name, store.list_tags(name))

    # -- gc and verify (registry/maintenance.py) --------------------------------------------
    def gc(self, dry_run: bool = False, grace_s: float = GC_GRACE_S) -> GcPlan:
        """Plan, then delete: dangling tags, stale views/temps, quarantined and orphan blobs
        (see :func:`adapterhub.registry.maintenance.collect_garbage`)."""
        from adapterhub.registry.maintenance import collect_garbage

        return collect_garbage(self.local, self.index, dry_run=dry_run, grace_s=grace_s)

    def verify(self, ref: str | None = None) -> dict[str, Any]:
        """Re-hash blobs of one version (or of the whole local store); quarantine corrupt ones."""
        from adapterhub.registry.maintenance import verify_blobs

        targets = None if ref is None else [self.resolve(self.local, ref)]
        return verify_blobs(self.local, targets)

    def rebuild_index(self) -> int:
        return self.index.rebuild()
