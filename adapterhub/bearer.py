"""Bearer secrets, shared by ``adapterhub serve --api-keys`` and ``adapterhub hub --tokens``.

Both files name their callers, hold each secret either in clear or as its sha256, and
are checked the same way:

* only the sha256 of each secret is kept in memory;
* a presented secret is hashed and compared against *every* stored digest with
  :func:`hmac.compare_digest` (no early exit), so timing tells neither which entry
  matched nor how much of a secret was right;
* a malformed file is refused with one line naming the field, never echoing the value
  (it may be a secret).

Both files have one shape: a list of :class:`SecretEntry` (a name, the secret or its
sha256, adapter globs) checked by one set of rules, with unique names and secrets
(:func:`check_unique`). Each file's model only names its secret field (``key`` or
``token``, through a field alias) and adds what its entries grant (serve: ``admin``;
hub: a ``scope``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from adapterhub.errors import ConfigError

HEX64 = re.compile(r"[0-9a-f]{64}")

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def check_sha256_hex(value: str | None, what: str) -> str | None:
    """Normalise a ``*_sha256`` field (lowercase hex); ValueError names ``what`` it hashes."""
    if value is None:
        return None
    value = value.strip().lower()
    if not HEX64.fullmatch(value):
        raise ValueError(f"must be 64 hexadecimal digits (sha256 of the {what})")
    return value


def check_patterns(patterns: list[str]) -> list[str]:
    """An entry's adapter globs: an empty one would match nothing and hide a typo."""
    if any(not p for p in patterns):
        raise ValueError("patterns must not be empty")
    return patterns


def check_one_secret(secret: str | None, secret_sha256: str | None, what: str) -> None:
    """An entry gives its secret in clear or as a sha256, never both, never neither."""
    if (secret is None) == (secret_sha256 is None):
        raise ValueError(f"give exactly one of {what} or {what}_sha256")


def secret_digest(secret: str | None, secret_sha256: str | None) -> bytes:
    """The 32-byte digest an entry is matched by (from the clear secret or its hex sha256)."""
    if secret is not None:
        return hashlib.sha256(secret.encode()).digest()
    assert secret_sha256 is not None, "an entry holds a secret or its sha256"
    return bytes.fromhex(secret_sha256)


class SecretEntry(BaseModel):
    """One entry of a secrets file. Subclasses redeclare ``secret`` and ``secret_sha256``
    with the alias their file uses (``key``/``key_sha256``, ``token``/``token_sha256``),
    so errors name the field as the user wrote it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False)

    name: str = Field(min_length=1, max_length=64)
    secret: str | None = Field(default=None, min_length=8)
    secret_sha256: str | None = None
    adapters: list[str] = Field(default_factory=lambda: ["*"], min_length=1)

    @classmethod
    def secret_word(cls) -> str:
        """What the file calls its secret (the alias of ``secret``)."""
        return cls.model_fields["secret"].alias or "secret"

    @field_validator("secret")
    @classmethod
    def _printable(cls, v: str | None) -> str | None:
        # A header cannot carry spaces or control characters inside a secret: such an
        # entry could never match, so it is refused instead of silently dead.
        if v is not None and (v != v.strip() or any(ord(c) < 33 or ord(c) == 127 for c in v)):
            raise ValueError("must not contain spaces or control characters")
        return v

    @field_validator("secret_sha256")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        return check_sha256_hex(v, cls.secret_word())

    @field_validator("adapters")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        return check_patterns(v)

    @model_validator(mode="after")
    def _one_secret(self) -> SecretEntry:
        check_one_secret(self.secret, self.secret_sha256, self.secret_word())
        return self

    def digest(self) -> bytes:
        return secret_digest(self.secret, self.secret_sha256)


def check_unique(entries: list[SecretEntry], what: str) -> None:
    """No two entries of one file share a name or a secret (ValueError naming which)."""
    names = [e.name for e in entries]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ValueError(f"{what} name {dup!r} appears twice")
    digests = [e.digest() for e in entries]
    if len(set(digests)) != len(digests):
        raise ValueError(f"two entries hold the same {what}")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None if absent or another scheme."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def load_yaml_file(path: str | Path, flag: str) -> Any:
    """Parse a YAML secrets file; ConfigError one-liners prefixed with ``flag path:``."""
    import yaml

    p = Path(path)
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{flag} {p}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{flag} {p}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{flag} {p}: not valid YAML{where}") from None


def validate_file(model: type[M], data: Any, path: str | Path, flag: str) -> M:
    """``model.model_validate(data)`` with the first error as one line naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err.get("loc", ())) or "file"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        # The message never echoes the offending value: it may be a secret.
        raise ConfigError(f"{flag} {Path(path)}: {loc}: {msg}") from None


class SecretRing(Generic[T]):
    """Secrets stored as sha256 digests, each mapped to what it grants."""

    def __init__(self, entries: Iterable[tuple[bytes, T]]) -> None:
        self._entries = list(entries)

    def lookup(self, secret: str) -> T | None:
        """What ``secret`` grants, or None; every entry is compared (constant time)."""
        presented = hashlib.sha256(secret.encode()).digest()
        found: T | None = None
        for digest, value in self._entries:  # every entry: no early exit
            if hmac.compare_digest(digest, presented):
                found = value
        return found

    def __len__(self) -> int:
        return len(self._entries)
