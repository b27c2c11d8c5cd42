"""API keys of ``adapterhub serve --api-keys FILE``: who may call, and which adapters.

The file (YAML)::

    keys:
      - name: ops            # shown in logs and metrics instead of the key
        key: sk-ops-123      # or key_sha256: <hex>, so the file need not hold the secret
        adapters: ["*"]      # glob patterns of adapter names this key may use
        admin: true          # may call the load/unload routes (default false)
      - name: team-a
        key_sha256: 5f3c...
        adapters: ["team-a/*"]

Only the sha256 of each key is kept in memory; a presented key is hashed and compared
against every stored digest with :func:`hmac.compare_digest` (no early exit), so timing
does not tell how much of a key matched. Keys never appear in logs, metrics or errors.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapterhub.bearer import (
    SecretEntry,
    SecretRing,
    bearer_token,
    check_unique,
    load_yaml_file,
    validate_file,
)
from adapterhub.refs import adapter_name


class KeySpec(SecretEntry):
    """One entry of the keys file: a :class:`~adapterhub.bearer.SecretEntry` named ``key``."""

    secret: str | None = Field(default=None, min_length=8, alias="key")
    secret_sha256: str | None = Field(default=None, alias="key_sha256")
    admin: bool = False


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[KeySpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> KeysFile:
        check_unique(list(self.keys), "key")
        return self


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's name, its adapter patterns, whether it is an admin."""

    name: str
    patterns: tuple[str, ...] = ("*",)
    admin: bool = False

    def allows(self, adapter: str) -> bool:
        """May this key use ``adapter`` (a pool name or registry ref; version/tag ignored)?"""
        name = adapter_name(adapter)
        return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(adapter, p) for p in self.patterns)


ANONYMOUS = Principal("anonymous", ("*",), admin=True)
"""The caller when the server runs without ``--api-keys`` (bound to loopback by default)."""


class KeyRing:
    """The keys of one server, stored as sha256 digests (:class:`~adapterhub.bearer.SecretRing`)."""

    def __init__(self, specs: list[KeySpec]) -> None:
        self._ring = SecretRing((k.digest(), Principal(k.name, tuple(k.adapters), k.admin)) for k in specs)

    @classmethod
    def from_file(cls, path: str | Path) -> KeyRing:
        data = load_yaml_file(path, "--api-keys")
        return cls(validate_file(KeysFile, data, path, "--api-keys").keys)

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal of an ``Authorization: Bearer <key>`` header, or None."""
        token = bearer_token(authorization)
        return None if token is None else self._ring.lookup(token)

    def __len__(self) -> int:
        return len(self._ring)
