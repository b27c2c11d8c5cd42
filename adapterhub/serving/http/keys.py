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
import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from adapterhub.errors import ConfigError

_HEX64 = re.compile(r"[0-9a-f]{64}")


class KeySpec(BaseModel):
    """One entry of the keys file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    key: str | None = Field(default=None, min_length=8)
    key_sha256: str | None = None
    adapters: list[str] = Field(default_factory=lambda: ["*"])
    admin: bool = False

    @field_validator("key_sha256")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None:
            v = v.strip().lower()
            if not _HEX64.fullmatch(v):
                raise ValueError("must be 64 hexadecimal digits (sha256 of the key)")
        return v

    @field_validator("adapters")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        if any(not p for p in v):
            raise ValueError("patterns must not be empty")
        return v

    @model_validator(mode="after")
    def _one_secret(self) -> KeySpec:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of key or key_sha256")
        return self

    def digest(self) -> bytes:
        if self.key is not None:
            return hashlib.sha256(self.key.encode()).digest()
        assert self.key_sha256 is not None
        return bytes.fromhex(self.key_sha256)


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[KeySpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> KeysFile:
        names = [k.name for k in self.keys]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise ValueError(f"key name {dup!r} appears twice")
        digests = [k.digest() for k in self.keys]
        if len(set(digests)) != len(digests):
            raise ValueError("two entries hold the same key")
        return self


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's name, its adapter patterns, whether it is an admin."""

    name: str
    patterns: tuple[str, ...] = ("*",)
    admin: bool = False

    def allows(self, adapter: str) -> bool:
        """May this key use ``adapter`` (a pool name or registry ref; version/tag ignored)?"""
        name = adapter.split("@", 1)[0].split(":", 1)[0]
        return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(adapter, p) for p in self.patterns)


ANONYMOUS = Principal("anonymous", ("*",), admin=True)
"""The caller when the server runs without ``--api-keys`` (bound to loopback by default)."""


class KeyRing:
    """The keys of one server, stored as sha256 digests."""

    def __init__(self, specs: list[KeySpec]) -> None:
        self._entries = [
            (k.digest(), Principal(k.name, tuple(k.adapters), k.admin)) for k in specs
        ]

    @classmethod
    def from_file(cls, path: str | Path) -> KeyRing:
        import yaml

        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"--api-keys {p}: cannot read ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"--api-keys {p}: not valid YAML{where}") from None
        try:
            parsed = KeysFile.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err.get("loc", ())) or "file"
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            # The message never echoes the offending value: it may be a secret.
            raise ConfigError(f"--api-keys {p}: {loc}: {msg}") from None
        return cls(parsed.keys)

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal of an ``Authorization: Bearer <key>`` header, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        presented = hashlib.sha256(token.strip().encode()).digest()
        found: Principal | None = None
        for digest, principal in self._entries:  # every entry: no early exit
            if hmac.compare_digest(digest, presented):
                found = principal
        return found

    def __len__(self) -> int:
        return len(self._entries)
