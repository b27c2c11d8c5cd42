"""Bearer tokens of ``adapterhub hub --tokens FILE``: who may read, who may write what.

The file (YAML), in the shape of ``adapterhub serve --api-keys``::

    public_read: false          # true: anyone may read without a token (default false)
    tokens:
      - name: ci                # shown in errors and the hub's pages instead of the token
        token: hub-ci-7f3a...   # or token_sha256: <hex>, so the file need not hold the secret
        scope: write            # read (default) or write; a write token also reads
        adapters: ["team/*"]    # glob patterns of adapter names it applies to (default ["*"])
      - name: readers
        token_sha256: 5f3c...
        scope: read

Without a tokens file the hub is read-only and anyone who can connect may read. With
one, reads need a read or write token unless ``public_read`` is true, and every write
needs a write token whose patterns match the adapter. Tokens are kept only as sha256
digests and compared in constant time (:mod:`adapterhub.bearer`); they never appear in
logs or errors.

Clients send ``Authorization: Bearer <token>``. The browser pages also accept the login
cookie (:data:`COOKIE`, a session id mapped to a principal by :mod:`.sessions`), which
only ever grants reading: the API's writes take the header alone, so no cross-site form
can write with a visitor's cookie.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapterhub.bearer import (
    SecretEntry,
    SecretRing,
    bearer_token,
    check_unique,
    load_yaml_file,
    validate_file,
)
from adapterhub.errors import AuthenticationError

COOKIE = "adapterhub_session"
"""The pages' login cookie: a session id (:mod:`.sessions`), never a token; read-only."""

Scope = Literal["read", "write"]


class TokenSpec(SecretEntry):
    """One entry of the tokens file: a :class:`~adapterhub.bearer.SecretEntry` named ``token``."""

    secret: str | None = Field(default=None, min_length=8, alias="token")
    secret_sha256: str | None = Field(default=None, alias="token_sha256")
    scope: Scope = "read"


class TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: list[TokenSpec] = Field(min_length=1)
    public_read: bool = False

    @model_validator(mode="after")
    def _unique(self) -> TokensFile:
        check_unique(list(self.tokens), "token")
        return self


@dataclass(frozen=True)
class HubPrincipal:
    """Who is calling: a token's name, its scope and the adapter names it covers."""

    name: str
    scope: Scope = "read"
    patterns: tuple[str, ...] = ("*",)

    def covers(self, adapter_name: str) -> bool:
        return any(fnmatch.fnmatchcase(adapter_name, p) for p in self.patterns)

    def can_read(self, adapter_name: str) -> bool:
        return self.covers(adapter_name)  # a write token reads too

    def can_write(self, adapter_name: str) -> bool:
        return self.scope == "write" and self.covers(adapter_name)

    @property
    def unrestricted(self) -> bool:
        """Covers every name (``*``): may list and delete blobs, which belong to no one name."""
        return "*" in self.patterns

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "scope": self.scope, "adapters": list(self.patterns)}


ANONYMOUS_READER = HubPrincipal("anonymous", "read", ("*",))
"""The caller of a hub without a tokens file, or without a token where ``public_read``."""


class TokenRing:
    """The tokens of one hub, stored as sha256 digests."""

    def __init__(self, specs: list[TokenSpec], public_read: bool = False) -> None:
        self.public_read = public_read
        self._ring = SecretRing((t.digest(), HubPrincipal(t.name, t.scope, tuple(t.adapters))) for t in specs)

    @classmethod
    def from_file(cls, path: str | Path) -> TokenRing:
        parsed = validate_file(TokensFile, load_yaml_file(path, "--tokens"), path, "--tokens")
        return cls(parsed.tokens, public_read=parsed.public_read)

    def lookup(self, token: str) -> HubPrincipal | None:
        return self._ring.lookup(token)

    def __len__(self) -> int:
        return len(self._ring)


def authenticate(ring: TokenRing | None, authorization_header: str | None, session: HubPrincipal | None = None) -> HubPrincipal | None:
    """Who presents these credentials; None: nobody, and this hub does not read to anonymous.

    A presented token that is malformed or unknown raises :class:`AuthenticationError`
    (401) rather than falling back to anonymous, so a mistyped token is reported, not
    silently downgraded. ``session`` is the login cookie's principal (looked up by the
    caller; an unknown or forged cookie is simply no session): it counts only when no
    header is sent and grants read scope whatever its token's scope.
    """
    if ring is None:
        return ANONYMOUS_READER  # no tokens file: read-only, open to read
    if authorization_header:
        token = bearer_token(authorization_header)
        if token is None:
            raise AuthenticationError("malformed Authorization header: expected 'Bearer <token>'")
        who = ring.lookup(token)
        if who is None:
            raise AuthenticationError("invalid token: it is not one of this hub's tokens")
        return who
    if session is not None:
        return replace(session, scope="read")
    return ANONYMOUS_READER if ring.public_read else None
