"""Adapter stores: where published adapter versions live (local, file://, s3://, hf://).

A store holds three kinds of objects, all addressed by validated names (see
``adapterhub.registry.names``):

* **blobs** — file contents addressed by their sha256 (``put_blob`` is idempotent;
  identical bytes are stored once). Every ``get_blob`` verifies size and sha256 and
  never leaves unverified bytes under ``dest``.
* **versions** — ``name@version`` → the adapter's manifest JSON (which lists the blobs
  of its files). A version is created at most once: ``put_version`` is atomic and
  conditional, so of two writers of the same ``name@version`` exactly one wins and the
  other gets ``VersionExistsError`` (local: hard link no-replace; S3: ``If-None-Match:
  *``; HF: commit with ``parent_commit``). A version becomes visible only once its
  manifest exists, which the registry writes after all its blobs.
* **tags** — ``name:tag`` → a version string, replaced atomically (last writer wins).
* **records** — append-only JSON documents attached to a version (evaluation reports
  added after publication) that never change the immutable manifest.
* **signatures** (optional, :class:`SignatureStore`) — immutable signature bundles beside
  a version, named by their own sha256 (so storing one twice is a no-op), several per
  version (``docs/signing.md``). The registry checks a bundle before storing it.

Missing objects raise ``AdapterNotFoundError``; I/O and remote failures raise
``StoreError`` (``RemoteUnavailableError`` after bounded retries). Stores do no
validation of adapter contents: the registry facade does that before calling them.
``adapterhub.testing.stores`` is the conformance suite every store plugin should pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

Progress = Callable[[int], None]
"""Called with the number of bytes just transferred (drives progress bars)."""


@runtime_checkable
class Store(Protocol):
    url: str

    # -- blobs ------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool: ...

    def put_blob(self, digest: str, source: Path, progress: Progress | None = None) -> None:
        """Upload ``source`` (whose sha256 is ``digest``); idempotent."""
        ...

    def get_blob(self, digest: str, dest: Path, size: int, progress: Progress | None = None) -> None:
        """Download into ``dest`` atomically; IntegrityError (nothing at ``dest``) on mismatch.

        Atomic (temp file + rename) but not fsynced: downloads land in caches that are
        re-verified on read; a caller that needs durability fsyncs ``dest`` itself.
        """
        ...

    def iter_blobs(self) -> Iterator[str]:
        """Digests of every stored blob (for gc and verify)."""
        ...

    def delete_blob(self, digest: str) -> None: ...

    # -- versions ---------------------------------------------------------------------
    def put_version(self, name: str, version: str, manifest: bytes) -> None:
        """Create name@version; VersionExistsError if it already exists."""
        ...

    def get_version(self, name: str, version: str) -> bytes: ...

    def list_versions(self, name: str) -> list[str]: ...

    def list_names(self) -> Iterator[str]: ...

    def delete_version(self, name: str, version: str) -> None: ...

    # -- tags -------------------------------------------------------------------------
    def set_tag(self, name: str, tag: str, version: str) -> None: ...

    def get_tag(self, name: str, tag: str) -> str: ...

    def list_tags(self, name: str) -> dict[str, str]: ...

    def delete_tag(self, name: str, tag: str) -> None: ...

    # -- records attached to a version (evaluation reports) ----------------------------
    def add_record(self, name: str, version: str, record: bytes) -> str:
        """Store one JSON record beside name@version; returns its id."""
        ...

    def list_records(self, name: str, version: str) -> list[bytes]: ...


@runtime_checkable
class SignatureStore(Protocol):
    """A store that can hold signatures (every built-in store; a plugin store may not)."""

    def put_signature(self, name: str, version: str, sig_id: str, data: bytes) -> bool:
        """Store ``data`` (whose sha256 is ``sig_id``) beside name@version; False when it
        was already there. AdapterNotFoundError if the version does not exist."""
        ...

    def list_signatures(self, name: str, version: str) -> list[bytes]:
        """Every signature stored beside name@version, in id order."""
        ...

    def delete_signature(self, name: str, version: str, sig_id: str) -> None:
        """AdapterNotFoundError if there is no such signature."""
        ...


StoreFactory = Callable[[str], Store]
"""Builds a store from a URL of the scheme it was registered for."""
