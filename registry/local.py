"""The local, content-addressed store (the default registry, and ``file://`` shares).

On-disk layout under the store root::

    blobs/sha256/ab/ab12...(64 hex)        file contents, read-only, stored once
    adapters/<ns>/<name>/versions/<v>.json  immutable manifests (created exclusively)
    adapters/<ns>/<name>/tags/<tag>         "<version>\\n", replaced atomically
    adapters/<ns>/<name>/records/<v>/*.json evaluation records added after publishing
    adapters/<ns>/<name>/signatures/<v>/<sha256>.sig  signature bundles (docs/signing.md)
    views/<ns>/<name>/<v>/                  materialised directories handed out by pull
    quarantine/                             blobs found corrupt (never served again)
    pending/, index.sqlite, index.lock      the search index (a rebuildable cache)

``<ns>`` is ``_`` for names without a namespace. Pull hands back a *view*: a directory
whose files are hard links to the verified blobs (copies where links are impossible)
plus the manifest, so a pull costs no copy. Every pull re-hashes the view's files
against the manifest — the blob bytes are read once, which is the physical floor — and
a mismatch quarantines the blob, drops the view and raises ``IntegrityError``.
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from adapterhub.registry.atomic import (
    atomic_write,
    copy_verified,
    create_exclusive,
    fsync_dir,
    is_temp_name,
    sha256_file,
    verify_file,
)
from adapterhub.registry.faults import crash_point
from adapterhub.registry.names import (
    join_name,
    safe_join,
    split_name,
    validate_name,
    validate_tag,
    validate_version,
)

from adapterhub.errors import AdapterNotFoundError, IntegrityError, StoreError, VersionExistsError

if TYPE_CHECKING:  # pydantic (the manifest model) loads on first use: `search` never needs it
    from adapterhub.manifest import Manifest
    from adapterhub.protocols.store import Progress

MANIFEST_NAME = "manifest.json"  # adapterhub.manifest.MANIFEST_NAME, without importing pydantic
DIGEST_RE = re.compile(r"[0-9a-f]{64}\Z")


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise IntegrityError(f"invalid blob digest {digest!r}: expected 64 lowercase hex characters")
    return digest


class _Opened(NamedTuple):
    """A verified view remembered by :meth:`LocalStore.open_version`."""

    vpath: str  # the version file
    key: tuple[int, int, int]  # its (inode, size, mtime_ns) when it was parsed
    view: Path
    view_manifest: str
    manifest: Manifest
    manifest_size: int
    files: tuple[tuple[str, int, str], ...]  # (path in the view, size, sha256)


# Process-wide, so that a new Registry/LocalStore object on the same root (a server or
# host creating one per request) pulls at the warm speed. Bounded: oldest entries go.
_OPENED: dict[tuple[str, str, str], _Opened] = {}
_OPENED_MAX = 4096


def forget_opened() -> None:
    """Drop the remembered manifests (the next pull of each version re-reads and re-parses it)."""
    _OPENED.clear()


def _read_small_keyed(path: Path, what: str, limit: int = 4 * 1024 * 1024) -> tuple[bytes, tuple[int, int, int]]:
    """Like :func:`_read_small`, plus the (inode, size, mtime_ns) of the file it read."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise AdapterNotFoundError(f"{what} not found") from None
    except IsADirectoryError:
        raise IntegrityError(f"{path}: expected a file, found a directory") from None
    except OSError as exc:
        raise StoreError(f"could not read {path}: {exc.strerror or exc}") from None
    with fh:
        st = os.fstat(fh.fileno())
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise StoreError(f"could not read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise IntegrityError(f"{path}: over the {limit} byte limit")
    return data, (st.st_ino, st.st_size, st.st_mtime_ns)


def _read_small(path: Path, what: str, limit: int = 4 * 1024 * 1024) -> bytes:
    """A small store file (manifest, tag, record), with one-line errors and a size cap."""
    return _read_small_keyed(path, what, limit)[0]


class LocalStore:
    """A :class:`~adapterhub.protocols.store.Store` on a local or shared filesystem."""

    def __init__(self, root: str | Path, url: str | None = None, durable: bool = True) -> None:
        self.root = Path(root).expanduser().absolute()
        self._root_str = str(self.root)
        # A cache of a remote store need not fsync: every read re-verifies, and a torn
        # file is fetched again. The registry itself (durable=True) fsyncs everything.
        self.durable = durable
        self._url = url
        if not os.path.isdir(self._root_str):
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create store directory {self.root}: {exc.strerror or exc}") from None

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = self.root.as_uri()
        return self._url

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    # -- paths (every one resolved and checked to stay inside the root) -----------------
    def blob_path(self, digest: str) -> Path:
        check_digest(digest)
        return safe_join(self.root, "blobs", "sha256", digest[:2], digest)

    def name_dir(self, name: str) -> Path:
        ns, base = split_name(name)
        return safe_join(self.root, "adapters", ns, base)

    def version_path(self, name: str, version: str) -> Path:
        ns, base = split_name(name)
        return safe_join(self.root, "adapters", ns, base, "versions", f"{validate_version(version)}.json")

    def tag_path(self, name: str, tag: str) -> Path:
        ns, base = split_name(name)
        return safe_join(self.root, "adapters", ns, base, "tags", validate_tag(tag))

    def records_dir(self, name: str, version: str) -> Path:
        ns, base = split_name(name)
        return safe_join(self.root, "adapters", ns, base, "records", validate_version(version))

    def signatures_dir(self, name: str, version: str) -> Path:
        ns, base = split_name(name)
        return safe_join(self.root, "adapters", ns, base, "signatures", validate_version(version))

    def view_path(self, name: str, version: str) -> Path:
        ns, base = split_name(name)
        validate_version(version)
        return safe_join(self.root, "views", ns, base, version)

    # -- blobs ------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def put_blob(self, digest: str, source: Path, progress: Progress | None = None) -> None:
        final = self.blob_path(digest)
        if final.is_file():
            # Refresh mtime: gc spares young blobs, so a push that reuses this blob
            # cannot lose it to a gc running before its manifest is written.
            try:
                os.utime(final)
            except OSError:
                pass
            return
        try:
            src = open(source, "rb")
        except OSError as exc:
            raise StoreError(f"cannot read {source}: {exc.strerror or exc}") from None
        with src:
            copy_verified(src, final, digest, None, str(source), progress, _mid_blob_hook, sync=self.durable)

    def get_blob(self, digest: str, dest: Path, size: int, progress: Progress | None = None) -> None:
        src_path = self.blob_path(digest)
        try:
            src = open(src_path, "rb")
        except FileNotFoundError:
            raise AdapterNotFoundError(f"blob {digest} not found in {self.url}") from None
        with src:
            copy_verified(src, Path(dest), digest, size, str(src_path), progress, sync=False)

    def put_blob_stream(self, digest: str, source: object, size: int, progress: Progress | None = None) -> Path:
        """Store a blob read from a file-like object (remote downloads land here)."""
        final = self.blob_path(digest)
        copy_verified(source, final, digest, size, f"blob {digest}", progress, sync=self.durable)  # type: ignore[arg-type]
        return final

    def iter_blobs(self) -> Iterator[str]:
        top = self.root / "blobs" / "sha256"
        if not top.is_dir():
            return
        for sub in sorted(os.listdir(top)):
            d = top / sub
            if len(sub) != 2 or not d.is_dir():
                continue
            for entry in sorted(os.listdir(d)):
                if DIGEST_RE.match(entry) and entry.startswith(sub):
                    yield entry

    def delete_blob(self, digest: str) -> None:
        try:
            os.unlink(self.blob_path(digest))
        except FileNotFoundError:
            pass

    def quarantine_blob(self, digest: str) -> Path | None:
        """Move a corrupt blob aside so it is never served and a re-push replaces it."""
        src = self.blob_path(digest)
        dest_dir = self.root / "quarantine"
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / f"{digest}-{os.urandom(4).hex()}"
        try:
            os.replace(src, dest)
        except FileNotFoundError:
            return None
        return dest

    # -- versions ---------------------------------------------------------------------
    def put_version(self, name: str, version: str, manifest: bytes) -> None:
        create_exclusive(self.version_path(name, version), manifest, f"{name}@{version} in {self.url}", sync=self.durable)

    def get_version(self, name: str, version: str) -> bytes:
        return _read_small(self.version_path(name, version), f"{name}@{version} in {self.url}")

    def has_version(self, name: str, version: str) -> bool:
        return self.version_path(name, version).is_file()

    def list_versions(self, name: str) -> list[str]:
        d = self.name_dir(name) / "versions"
        try:
            entries = os.listdir(d)
        except FileNotFoundError:
            return []
        out = []
        for entry in entries:
            if entry.endswith(".json") and not is_temp_name(entry):
                try:
                    out.append(validate_version(entry[:-5]))
                except ValueError:
                    continue
        return out

    def list_names(self) -> Iterator[str]:
        top = self.root / "adapters"
        if not top.is_dir():
            return
        for ns in sorted(os.listdir(top)):
            if is_temp_name(ns) or not (top / ns).is_dir():
                continue
            for base in sorted(os.listdir(top / ns)):
                try:
                    name = join_name(ns, base)
                    validate_name(name)
                except ValueError:
                    continue  # stray entries are not adapters
                if self.list_versions(name):
                    yield name

    def delete_version(self, name: str, version: str) -> None:
        path = self.version_path(name, version)
        try:
            os.unlink(path)
        except FileNotFoundError:
            raise AdapterNotFoundError(f"{name}@{version} not found in {self.url}") from None
        fsync_dir(path.parent)
        _OPENED.pop((self._root_str, name, version), None)
        _rmtree(self.records_dir(name, version), ignore_errors=True)
        _rmtree(self.signatures_dir(name, version), ignore_errors=True)
        _rmtree(self.view_path(name, version), ignore_errors=True)

    # -- tags -------------------------------------------------------------------------
    def set_tag(self, name: str, tag: str, version: str) -> None:
        validate_version(version)
        atomic_write(self.tag_path(name, tag), f"{version}\n".encode(), sync=self.durable)

    def get_tag(self, name: str, tag: str) -> str:
        path = self.tag_path(name, tag)
        raw = _read_small(path, f"tag {name}:{tag} in {self.url}", 256)
        try:
            return validate_version(raw.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise IntegrityError(f"{path}: tag file does not hold a version") from None

    def list_tags(self, name: str) -> dict[str, str]:
        d = self.name_dir(name) / "tags"
        try:
            entries = sorted(os.listdir(d))
        except FileNotFoundError:
            return {}
        out: dict[str, str] = {}
        for entry in entries:
            if is_temp_name(entry):
                continue
            try:
                out[entry] = self.get_tag(name, entry)
            except (ValueError, AdapterNotFoundError):
                continue
        return out

    def delete_tag(self, name: str, tag: str) -> None:
        try:
            os.unlink(self.tag_path(name, tag))
        except FileNotFoundError:
            raise AdapterNotFoundError(f"tag {name}:{tag} not found in {self.url}") from None

    # -- records ----------------------------------------------------------------------
    def add_record(self, name: str, version: str, record: bytes) -> str:
        if not self.has_version(name, version):
            raise AdapterNotFoundError(f"{name}@{version} not found in {self.url}")
        rid = f"{time.time_ns():020d}-{os.urandom(4).hex()}"  # sorts in creation order
        atomic_write(self.records_dir(name, version) / f"{rid}.json", record, sync=self.durable)
        return rid

    def list_records(self, name: str, version: str) -> list[bytes]:
        d = self.records_dir(name, version)
        try:
            entries = sorted(e for e in os.listdir(d) if e.endswith(".json") and not is_temp_name(e))
        except FileNotFoundError:
            return []
        return [_read_small(d / e, f"record {e}") for e in entries]

    # -- signatures: immutable, named by their sha256 -------------------------------------
    def put_signature(self, name: str, version: str, sig_id: str, data: bytes) -> bool:
        if not self.has_version(name, version):
            raise AdapterNotFoundError(f"{name}@{version} not found in {self.url}")
        path = self.signatures_dir(name, version) / f"{check_digest(sig_id)}.sig"
        if path.is_file():
            return False  # same name, same sha256: the same bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            create_exclusive(path, data, f"signature {sig_id[:12]} of {name}@{version}", sync=self.durable)
        except VersionExistsError:
            return False  # a concurrent put of the same bytes won
        return True

    def list_signatures(self, name: str, version: str) -> list[bytes]:
        d = self.signatures_dir(name, version)
        try:
            entries = sorted(e for e in os.listdir(d) if e.endswith(".sig") and not is_temp_name(e))
        except FileNotFoundError:
            return []
        return [_read_small(d / e, f"signature {e}") for e in entries]

    def delete_signature(self, name: str, version: str, sig_id: str) -> None:
        try:
            os.unlink(self.signatures_dir(name, version) / f"{check_digest(sig_id)}.sig")
        except FileNotFoundError:
            raise AdapterNotFoundError(f"signature {sig_id[:12]} of {name}@{version} not found in {self.url}") from None

    # -- pull: materialised, verified views --------------------------------------------
    def open_version(
        self, name: str, version: str, verified: frozenset[str] = frozenset(), known: tuple[bytes, Manifest] | None = None
    ) -> tuple[Path, Manifest]:
        """The verified directory of name@version (built once, re-hashed every time).

        The parsed manifest is remembered per process (shared by every store object on
        this root), keyed by the version file's (inode, size, mtime): versions are
        immutable, so a hit skips re-reading and re-parsing it, and skips re-resolving
        the paths. A hit still stats the version file (a deleted, re-created or
        redirected one misses, and the full path below re-checks every component) and
        hashes every file of the view: what is handed back is always verified.
        """
        ck = (self._root_str, name, version)
        hit = _OPENED.get(ck)
        if hit is not None:
            try:
                st = os.stat(hit.vpath)
                if (st.st_ino, st.st_size, st.st_mtime_ns) == hit.key and os.stat(hit.view_manifest).st_size == hit.manifest_size:
                    for path, size, digest in hit.files:
                        verify_file(path, size, digest)
                    return hit.view, hit.manifest
            except (OSError, IntegrityError):
                pass  # fall through to the full path, which rebuilds or reports
            _OPENED.pop(ck, None)
        vpath = self.version_path(name, version)
        raw, key = _read_small_keyed(vpath, f"{name}@{version} in {self.url}")
        if known is not None and known[0] == raw:
            manifest = known[1]  # the caller just stored these bytes and parsed them
        else:
            from adapterhub.manifest import parse_manifest

            manifest = parse_manifest(raw, str(vpath))
        view = self.view_path(name, version)
        view_manifest = view / MANIFEST_NAME
        try:
            fresh = view_manifest.read_bytes() == raw
        except OSError:
            fresh = False
        if not fresh:
            self._materialise(view, raw, manifest)
        files = []
        for entry in manifest.files:
            path = str(view / entry.path)
            files.append((path, entry.size, entry.sha256))
            if entry.sha256 in verified and fresh is False:
                continue  # hashed a moment ago by the download that stored it
            try:
                verify_file(path, entry.size, entry.sha256)
            except IntegrityError:
                self._on_corrupt_view(view, entry.sha256, entry.size, f"{name}@{version}", entry.path)
        if len(_OPENED) >= _OPENED_MAX:
            _OPENED.pop(next(iter(_OPENED)), None)  # drop the oldest entry
        _OPENED[ck] = _Opened(str(vpath), key, view, str(view_manifest), manifest, len(raw), tuple(files))
        return view, manifest

    def _materialise(self, view: Path, raw: bytes, manifest: Manifest) -> None:
        view.parent.mkdir(parents=True, exist_ok=True)
        tmp = view.parent / f".{view.name}.tmp-{os.getpid()}-{os.urandom(6).hex()}"
        tmp.mkdir()
        try:
            for entry in manifest.files:
                blob = self.blob_path(entry.sha256)
                if not blob.is_file():
                    raise IntegrityError(f"{blob}: blob of {entry.path} ({manifest.name}@{manifest.version}) is missing from the store")
                try:
                    os.link(blob, tmp / entry.path)
                except OSError:
                    _copyfile(blob, tmp / entry.path)
            (tmp / MANIFEST_NAME).write_bytes(raw)
            if self.durable:
                fsync_dir(tmp)
            if view.exists():
                try:
                    same = (view / MANIFEST_NAME).read_bytes() == raw
                except OSError:
                    same = False
                if same:
                    return  # another process built it meanwhile; tmp is removed below
                # A stale view (of a deleted and re-created version) is replaced whole.
                _rmtree(view, ignore_errors=True)
            try:
                os.rename(tmp, view)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                # Another process materialised it first; theirs is as good as ours.
        finally:
            if tmp.exists():
                _rmtree(tmp, ignore_errors=True)
        if self.durable:
            fsync_dir(view.parent)

    def _on_corrupt_view(self, view: Path, digest: str, size: int, label: str, fname: str) -> None:
        blob = self.blob_path(digest)
        _rmtree(view, ignore_errors=True)
        detail = "is missing"
        if blob.is_file():
            got_size, got = sha256_file(blob)
            if got_size == size and got == digest:
                # The blob is fine; only the view was damaged. Rebuild it once.
                raise IntegrityError(
                    f"{view / fname}: file of {label} was modified in the view; it was removed, pull again"
                )
            moved = self.quarantine_blob(digest)
            detail = f"is corrupt (size {got_size}, sha256 {got[:12]}...), moved to {moved}"
        raise IntegrityError(f"{blob}: blob of {label} file {fname} {detail}; push it again or pull from a remote")

    def verify_blob(self, digest: str) -> None:
        path = self.blob_path(digest)
        size, got = sha256_file(path)
        if got != digest:
            raise IntegrityError(f"{path}: sha256 mismatch (got {got[:16]}..., size {size}); the blob is corrupt")


def _rmtree(path: Path, ignore_errors: bool = True) -> None:
    import shutil  # imported on use: shutil pulls in bz2/lzma, which `search` never needs

    shutil.rmtree(path, ignore_errors=ignore_errors)


def _copyfile(src: Path, dst: Path) -> None:
    import shutil

    shutil.copyfile(src, dst)


def _mid_blob_hook(written: int) -> None:
    crash_point("mid-blob")
