"""Helpers for tests that sign adapters: key pairs and trust files on disk.

    from adapterhub.testing.signing import make_key, write_trust

    alice = make_key(tmp_path, "alice")
    trust = write_trust(tmp_path / "trust.yaml", {"alice": (alice, ["team/*"])})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from adapterhub.registry.keys import KeyInfo, generate


def make_key(directory: Path, name: str) -> KeyInfo:
    """A fresh, unencrypted EC P-256 key pair ``directory/name.key`` + ``.pub``."""
    return generate(name, directory)


def write_trust(path: Path, entries: Mapping[str, tuple[KeyInfo | Path, Sequence[str]]]) -> Path:
    """A trust file ``{key name: (key or public key file, adapter globs)}``; written
    through a temp file and a rename, as an operator's editor would, so a reader never
    sees half of it."""
    import yaml

    doc = {"keys": [
        {"name": n, "public_key": str(k.public if isinstance(k, KeyInfo) else k), "adapters": list(globs)}
        for n, (k, globs) in entries.items()
    ]}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(doc), encoding="utf-8")
    tmp.replace(path)
    return path
