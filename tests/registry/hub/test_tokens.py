"""The hub's tokens file, principals and authentication (registry/hub/tokens.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from adapterhub.registry.hub import tokens as tokens_mod
from adapterhub.registry.hub.tokens import ANONYMOUS_READER, HubPrincipal, TokenRing, authenticate

from adapterhub import bearer
from adapterhub.errors import AuthenticationError, ConfigError

WRITE = "hub-write-token-aaaaaaaa"
READ = "hub-read-token-bbbbbbbb"
TEAM = "hub-team-token-cccccccc"

GOOD = f"""
tokens:
  - name: ci
    token: {WRITE}
    scope: write
  - name: readers
    token_sha256: {hashlib.sha256(READ.encode()).hexdigest().upper()}
  - name: team-a
    token: {TEAM}
    scope: write
    adapters: ["team-a/*", "shared"]
"""


def ring_of(tmp_path: Path, text: str) -> TokenRing:
    f = tmp_path / "tokens.yaml"
    f.write_text(text)
    return TokenRing.from_file(f)


def test_a_tokens_file_gives_each_token_its_scope_and_globs(tmp_path: Path) -> None:
    ring = ring_of(tmp_path, GOOD)
    assert len(ring) == 3 and ring.public_read is False
    assert ring.lookup(WRITE) == HubPrincipal("ci", "write", ("*",))
    assert ring.lookup(READ) == HubPrincipal("readers", "read", ("*",))  # by sha256, any hex case
    team = ring.lookup(TEAM)
    assert team is not None and team.can_write("team-a/x") and team.can_write("shared") and team.can_read("team-a/x")
    assert not team.can_write("team-b/x") and not team.can_read("team-b/x") and not team.unrestricted
    assert ring.lookup(WRITE + "x") is None and ring.lookup("") is None
    readers = ring.lookup(READ)
    assert readers is not None and readers.can_read("any/thing") and not readers.can_write("any/thing") and readers.unrestricted


def test_authentication_rules(tmp_path: Path) -> None:
    ring = ring_of(tmp_path, GOOD)
    # No tokens file: a read-only hub, open to read, whatever is presented.
    assert authenticate(None, None) is ANONYMOUS_READER
    assert authenticate(None, f"Bearer {WRITE}") is ANONYMOUS_READER
    assert not ANONYMOUS_READER.can_write("x")
    # A tokens file without public_read: no token, nobody.
    assert authenticate(ring, None) is None and authenticate(ring, "") is None
    assert authenticate(ring, f"Bearer {WRITE}") == HubPrincipal("ci", "write", ("*",))
    assert authenticate(ring, f"bearer   {READ}  ") == HubPrincipal("readers", "read", ("*",))
    for bad in (f"Bearer {WRITE}0", f"Basic {WRITE}", "Bearer ", WRITE):
        with pytest.raises(AuthenticationError) as info:  # presented but wrong: never anonymous
            authenticate(ring, bad)
        assert WRITE not in str(info.value)
    # The login session only ever reads, and only counts without a header.
    session = HubPrincipal("ci", "write", ("*",))
    cookie = authenticate(ring, None, session)
    assert cookie == HubPrincipal("ci", "read", ("*",)) and not cookie.can_write("x")
    assert authenticate(ring, f"Bearer {TEAM}", session) == HubPrincipal("team-a", "write", ("team-a/*", "shared"))
    public = ring_of(tmp_path, GOOD + "public_read: true\n")
    assert authenticate(public, None) is ANONYMOUS_READER


@pytest.mark.parametrize(("text", "field"), [
    ("tokens: []\n", "tokens"),
    ("tokens:\n  - name: a\n", "tokens.0"),
    ("tokens:\n  - name: a\n    token: sk-aaaaaaaaaa\n    token_sha256: " + "a" * 64 + "\n", "exactly one of token or token_sha256"),
    ("tokens:\n  - name: a\n    token: sk-aaaaaaaaaa\n    scope: admin\n", "tokens.0.scope"),
    ("tokens:\n  - name: a\n    token: sk-aaaaaaaaaa\n    scop: write\n", "tokens.0.scop"),
    ("tokens:\n  - name: a\n    token_sha256: xyz\n", "sha256 of the token"),
    ("tokens:\n  - name: a\n    token: sk-aaaa aaaaaa\n", "spaces or control characters"),
    ("tokens:\n  - name: a\n    token: short\n", "tokens.0.token"),
    ("tokens:\n  - name: a\n    token: sk-aaaaaaaaaa\n    adapters: ['']\n", "patterns must not be empty"),
    ("tokens:\n  - name: a\n    token: sk-aaaaaaaaaa\n    adapters: []\n", "tokens.0.adapters"),
    ("tokens:\n  - name: a\n    token: sk-aaaaaaaaaa\n  - name: a\n    token: sk-bbbbbbbbbb\n", "appears twice"),
    ("tokens:\n  - name: a\n    token: sk-aaaaaaaaaa\n  - name: b\n    token: sk-aaaaaaaaaa\n", "same token"),
    ("tokens:\n  - name: a\n    token: sk-aaaaaaaaaa\npublic_read: perhaps\n", "public_read"),
    ("tokens:\n  - name: a\n    token: sk-aaaaaaaaaa\nkeys: []\n", "keys"),
    ("tokens: [\n", "not valid YAML"),
    ("- just a list\n", "file"),
])
def test_a_malformed_tokens_file_is_one_line_naming_the_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field) as info:
        ring_of(tmp_path, text)
    message = str(info.value)
    assert message.startswith("--tokens ") and "\n" not in message and "sk-aaaa" not in message


def test_an_unreadable_tokens_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        TokenRing.from_file(tmp_path / "missing.yaml")


def test_every_entry_is_compared_whichever_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit: the number of comparisons does not depend on the token presented."""
    ring = ring_of(tmp_path, GOOD)
    calls: list[int] = []
    real = bearer.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(bearer.hmac, "compare_digest", counting)
    for token in (WRITE, TEAM, "nobody-at-all-123"):
        calls.clear()
        ring.lookup(token)
        assert len(calls) == len(ring)


def test_the_cookie_name_is_the_pages_one() -> None:
    from adapterhub.registry.hub import pages

    assert tokens_mod.COOKIE == pages.COOKIE
