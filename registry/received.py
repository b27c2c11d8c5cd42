"""The checks ``adapterhub push`` makes, run on a version whose blobs are already stored.

A push validates its adapter directory before the store sees a byte
(:func:`adapterhub.registry.validate.read_checked`). A server that publishes on a
client's behalf (the hub) receives the blobs first and the manifest last, so it runs the
same checks at the manifest: the manifest parses strictly and names the ``name@version``
it is published as, every file it lists is in the store at the recorded size, and then
the very same :func:`read_checked` runs over the stored bytes (materialised into a temp
directory: hard links for a local store, verified downloads for any other), so a version
is never published through a server that ``adapterhub push`` would have refused.

Messages never name the temp directory (they are answered to clients): files are named
as the manifest lists them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from adapterhub.registry.local import LocalStore

from adapterhub.errors import AdapterhubError, AdapterNotFoundError, IntegrityError, ManifestError

if TYPE_CHECKING:
    from adapterhub.manifest import Manifest
    from adapterhub.protocols.store import Store


def stored_size(store: Store, digest: str) -> int | None:
    """A blob's stored size; None when absent; -1 when present but the store cannot say."""
    if isinstance(store, LocalStore):
        try:
            return os.stat(store.blob_path(digest)).st_size
        except FileNotFoundError:
            return None
    sized = getattr(store, "blob_size", None)
    if callable(sized):
        got = sized(digest)
        return None if got is None else int(got)
    return -1 if store.has_blob(digest) else None


def check_received(store: Store, name: str, version: str, data: bytes) -> Manifest:
    """Validate manifest bytes pushed as ``name@version`` against the blobs in ``store``."""
    from adapterhub.manifest import MANIFEST_NAME, parse_manifest

    m = parse_manifest(data, f"manifest of {name}@{version}")
    if m.name != name or m.version != version:
        raise ManifestError(f"the manifest names {m.name}@{m.version}, but it is pushed as {name}@{version}")
    for f in m.files:
        size = stored_size(store, f.sha256)
        if size is None:
            raise IntegrityError(f"blob {f.sha256[:16]}... of {f.path} is not on this hub: upload the blobs before the manifest")
        if size >= 0 and size != f.size:
            raise IntegrityError(f"blob {f.sha256[:16]}... of {f.path} holds {size} bytes, the manifest says {f.size}")
    work = Path(tempfile.mkdtemp(prefix=".adapterhub-received-"))
    try:
        (work / MANIFEST_NAME).write_bytes(data)
        for f in m.files:
            _materialise(store, f.sha256, f.size, work / f.path)
        _read_checked(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return m


def _materialise(store: Store, digest: str, size: int, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(store, LocalStore):
        try:
            os.link(store.blob_path(digest), dest)  # no copy; the checks only read
            return
        except FileNotFoundError:
            raise IntegrityError(f"blob {digest[:16]}... is not on this hub: upload the blobs before the manifest") from None
        except OSError:
            pass  # another filesystem: copy it (verified) below
    try:
        store.get_blob(digest, dest, size)
    except AdapterNotFoundError:
        raise IntegrityError(f"blob {digest[:16]}... is not on this hub: upload the blobs before the manifest") from None


def _read_checked(work: Path) -> None:
    from adapterhub.registry.validate import read_checked

    try:
        read_checked(work)
    except AdapterhubError as exc:
        # The same refusal push would give, without the server's temp path; every kind
        # of refusal is the client's artifact being unpublishable (422), whatever its type.
        message = str(exc).replace(f"{work}{os.sep}", "").replace(str(work), "the pushed adapter")
        if isinstance(exc, (ManifestError, IntegrityError)):
            raise type(exc)(message) from None
        raise IntegrityError(message) from None
