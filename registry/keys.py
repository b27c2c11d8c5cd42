"""Signing keys on disk: ``adapterhub keys generate/list`` and loading a key to sign with.

A key pair is two PEM files in the keys directory (``ADAPTERHUB_KEYS``, default
``$ADAPTERHUB_HOME/keys``) or one given with ``--out``: ``NAME.key`` (PKCS#8 EC P-256,
mode 0600 from its creation, optionally encrypted) and ``NAME.pub`` (SubjectPublicKeyInfo:
what goes into trust files, and what ``model_signing verify key --public_key`` reads).

The passphrase comes from ``ADAPTERHUB_KEY_PASSPHRASE`` when set (CI), else from a prompt
on a terminal; never from a command-line flag, which ps and shell history would show.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapterhub import paths
from adapterhub.errors import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

KEYS_ENV = "ADAPTERHUB_KEYS"
PASSPHRASE_ENV = "ADAPTERHUB_KEY_PASSPHRASE"
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def keys_dir() -> Path:
    env = os.environ.get(KEYS_ENV)
    return Path(env).expanduser() if env else paths.home() / "keys"


def check_key_name(name: str) -> str:
    if not KEY_NAME.fullmatch(name):
        raise ConfigError(f"invalid key name {name[:70]!r}: letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64")
    return name


@dataclass(frozen=True)
class KeyInfo:
    name: str
    private: Path | None
    public: Path
    fingerprint: str
    encrypted: bool

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "fingerprint": self.fingerprint, "public_key": str(self.public),
                "private_key": None if self.private is None else str(self.private), "encrypted": self.encrypted}


def _passphrase(prompt: str, confirm: bool) -> bytes | None:
    env = os.environ.get(PASSPHRASE_ENV)
    if env is not None:
        return env.encode() or None  # set but empty: no encryption
    if not sys.stdin.isatty():
        return None
    import getpass

    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("again: ") != first:
        raise ConfigError("the passphrases differ; nothing was written")
    return first.encode() or None


def generate(name: str, out: Path | None = None, encrypt: bool = False) -> KeyInfo:
    """A new EC P-256 key pair; refuses to overwrite either file."""
    from adapterhub.registry.signing import key_fingerprint
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    check_key_name(name)
    directory = out if out is not None else keys_dir()
    priv_path, pub_path = directory / f"{name}.key", directory / f"{name}.pub"
    for p in (priv_path, pub_path):
        if p.exists():
            raise ConfigError(f"{p} already exists; remove it or choose another NAME (keys are never overwritten)")
    password = _passphrase(f"passphrase for {priv_path}: ", confirm=True) if encrypt else None
    if encrypt and password is None:
        raise ConfigError(f"--encrypt needs a passphrase: set {PASSPHRASE_ENV} or run on a terminal")
    key = ec.generate_private_key(ec.SECP256R1())
    cipher: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption())
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, cipher)
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    directory.mkdir(parents=True, exist_ok=True)
    # 0600 from the first byte (O_EXCL: never through a world-readable moment or onto
    # someone else's file); the public half is written only once the private one is.
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(private_pem)
            fh.flush()
            os.fsync(fh.fileno())
        pub_path.write_bytes(public_pem)
    except BaseException:
        priv_path.unlink(missing_ok=True)
        raise
    return KeyInfo(name, priv_path, pub_path, key_fingerprint(key.public_key()), password is not None)


def list_keys(directory: Path | None = None) -> list[KeyInfo]:
    """Key pairs (and lone public keys) in ``directory``, by name."""
    from adapterhub.registry.signing import key_fingerprint
    from adapterhub.registry.trust import load_public_key

    d = directory if directory is not None else keys_dir()
    if not d.is_dir():
        return []
    out = []
    for pub in sorted(d.glob("*.pub")):
        name = pub.name[:-4]
        try:
            fp = key_fingerprint(load_public_key(pub.read_bytes(), str(pub)))
        except (ConfigError, OSError, ValueError):
            continue  # not a key of ours
        priv = d / f"{name}.key"
        encrypted = priv.is_file() and b"ENCRYPTED" in priv.read_bytes()[:64]
        out.append(KeyInfo(name, priv if priv.is_file() else None, pub, fp, encrypted))
    return out


def resolve_key_path(key: str) -> Path:
    """``--sign KEY``: a path to a private key file, or a NAME in the keys directory."""
    p = Path(key).expanduser()
    if p.is_file():
        return p
    if KEY_NAME.fullmatch(key) and (keys_dir() / f"{key}.key").is_file():
        return keys_dir() / f"{key}.key"
    raise ConfigError(f"no signing key {key!r}: not a file, and no {key}.key in {keys_dir()} (see `adapterhub keys list`)")


def load_private_key(key: str) -> EllipticCurvePrivateKey:
    """The private key ``key`` names, decrypted (passphrase from the environment or a prompt)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = resolve_key_path(key)
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    password = _passphrase(f"passphrase for {path}: ", confirm=False) if b"ENCRYPTED" in pem[:64] else None
    try:
        loaded = serialization.load_pem_private_key(pem, password)
    except TypeError:
        raise ConfigError(f"{path} is encrypted: set {PASSPHRASE_ENV} or run on a terminal to be asked") from None
    except ValueError:
        raise ConfigError(f"{path}: not a PEM private key, or the passphrase is wrong") from None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path}: not an elliptic-curve key (model-signing signs with EC P-256/384/521)")
    return loaded
