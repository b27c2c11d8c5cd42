"""Adapter stores: where published adapter versions live (local, file://, s3://, hf://).

A store holds content-addressed blobs and immutable version manifests plus movable tags.
``put_version`` must be atomic and conditional: two writers of the same name@version
cannot both win (local: link/rename-no-replace; S3: ``If-None-Match: *``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class Store(Protocol):
    url: str

    def has_blob(self, digest: str) -> bool: ...

    def put_blob(self, digest: str, source: Path) -> None:
        """Upload ``source`` (whose sha256 is ``digest``); idempotent."""
        ...

    def get_blob(self, digest: str, dest: Path) -> None:
        """Download into ``dest`` and verify size+sha256 (IntegrityError on mismatch)."""
        ...

    def put_version(self, name: str, version: str, manifest: bytes) -> None:
        """Create name@version; VersionExistsError if it already exists."""
        ...

    def get_version(self, name: str, version: str) -> bytes: ...

    def list_versions(self, name: str) -> list[str]: ...

    def list_names(self) -> Iterator[str]: ...

    def set_tag(self, name: str, tag: str, version: str) -> None: ...

    def get_tag(self, name: str, tag: str) -> str: ...

    def delete_version(self, name: str, version: str) -> None: ...


StoreFactory = Callable[[str], Store]
"""Builds a store from a URL of the scheme it was registered for."""
