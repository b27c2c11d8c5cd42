"""Signing keys on disk: 0600 private keys, optional passphrase, never overwritten."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from adapterhub.registry import keys

from adapterhub.errors import ConfigError


def test_generate_writes_a_0600_p256_pair_and_list_shows_it(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    info = keys.generate("alice", tmp_path)
    assert info.private is not None
    assert stat.S_IMODE(info.private.stat().st_mode) == 0o600
    key = keys.load_private_key(str(info.private))
    assert isinstance(key.curve, ec.SECP256R1)
    assert [(k.name, k.fingerprint, k.encrypted) for k in keys.list_keys(tmp_path)] == [("alice", info.fingerprint, False)]
    with pytest.raises(ConfigError, match="already exists"):
        keys.generate("alice", tmp_path)


def test_encrypted_key_needs_its_passphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(keys.PASSPHRASE_ENV, "correct horse")
    info = keys.generate("bob", tmp_path, encrypt=True)
    assert info.encrypted and b"ENCRYPTED" in info.private.read_bytes()[:64]  # type: ignore[union-attr]
    keys.load_private_key(str(info.private))
    monkeypatch.setenv(keys.PASSPHRASE_ENV, "wrong")
    with pytest.raises(ConfigError, match="passphrase is wrong"):
        keys.load_private_key(str(info.private))
    monkeypatch.delenv(keys.PASSPHRASE_ENV)
    with pytest.raises(ConfigError, match="is encrypted: set ADAPTERHUB_KEY_PASSPHRASE"):
        keys.load_private_key(str(info.private))


def test_key_names_resolve_in_the_keys_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(keys.KEYS_ENV, str(tmp_path / "k"))
    info = keys.generate("carol")
    assert keys.resolve_key_path("carol") == info.private
    with pytest.raises(ConfigError, match="no signing key 'dave'"):
        keys.resolve_key_path("dave")
    with pytest.raises(ConfigError, match="invalid key name"):
        keys.generate("../evil")
