"""The trust file: which public keys may sign for which adapter names.

``--trust FILE`` or ``ADAPTERHUB_TRUST``, in the YAML style of the api-keys and tokens
files::

    keys:
      - name: alice                 # shown in verdicts; unique
        public_key: keys/alice.pub  # a PEM file (relative to this file) or the PEM itself
        adapters: ["team/*"]        # globs of the adapter names this key may sign for

A version passes ``--require-signed`` when at least one of its signatures verifies with
a key trusted for its name. Rotation: list the old and the new key for the same globs,
re-sign, then remove the old entry. Revocation: remove the entry; its signatures stop
counting at once, because the file is re-read whenever its (mtime, size, inode) changes,
checked on every verdict (a stat, no cache that outlives the file).
"""

from __future__ import annotations

import fnmatch
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapterhub.registry import signing

from adapterhub.errors import ConfigError, SignatureError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

    from adapterhub.manifest import Manifest

TRUST_ENV = "ADAPTERHUB_TRUST"
FLAG = "--trust"

# Verdict statuses, best first (a refusal names the best one it found).
TRUSTED = "trusted"
NOT_FOR_NAME = "key not trusted for this name"
MISMATCH = "signature does not match"
UNKNOWN_KEY = "unknown key"
MALFORMED = "malformed signature"
UNCHECKED = "not checked (no trust file)"
_RANK = {TRUSTED: 0, MISMATCH: 1, NOT_FOR_NAME: 2, UNKNOWN_KEY: 3, MALFORMED: 4, UNCHECKED: 5}


@dataclass(frozen=True)
class TrustedKey:
    name: str
    fingerprint: str
    public_key: EllipticCurvePublicKey
    patterns: tuple[str, ...]

    def covers(self, adapter: str) -> bool:
        return any(fnmatch.fnmatchcase(adapter, p) for p in self.patterns)


@dataclass(frozen=True)
class Verdict:
    """What one signature proves about one version."""

    signature_id: str
    status: str
    key: str | None  # the trust file's name for the key, when known
    key_hint: str | None
    detail: str = ""

    @property
    def trusted(self) -> bool:
        return self.status == TRUSTED

    def who(self) -> str:
        return self.key or (f"key {self.key_hint[:16]}" if self.key_hint else "a key without a hint")

    def line(self) -> str:
        """``alice: trusted`` / ``key 3f2a...: unknown key`` (one phrase)."""
        text = f"{self.who()}: {self.status}"
        return f"{text} ({self.detail})" if self.detail else text

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.signature_id, "key": self.key, "key_hint": self.key_hint, "verdict": self.status,
                "trusted": self.trusted, "detail": self.detail}


def _entry_model() -> Any:
    from pydantic import BaseModel, ConfigDict, Field, field_validator

    from adapterhub.bearer import check_patterns

    class Entry(BaseModel):
        model_config = ConfigDict(frozen=True, extra="forbid")
        name: str = Field(min_length=1, max_length=100)
        public_key: str = Field(min_length=1)
        adapters: list[str] = Field(min_length=1)

        _patterns = field_validator("adapters")(check_patterns)

    class TrustFile(BaseModel):
        model_config = ConfigDict(frozen=True, extra="forbid")
        keys: list[Entry]

    return TrustFile


def load_public_key(text: bytes, what: str) -> EllipticCurvePublicKey:
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(text)
    except (ValueError, TypeError):
        raise ConfigError(f"{what}: not a PEM public key") from None
    signing.check_curve(key, what)
    return key  # type: ignore[return-value]  # check_curve narrowed it


def load_trust_file(path: Path) -> list[TrustedKey]:
    """Parse and check a trust file; ConfigError one-liners naming the field."""
    from adapterhub.bearer import load_yaml_file, validate_file

    data = load_yaml_file(path, FLAG)
    parsed = validate_file(_entry_model(), data, path, FLAG)
    out: list[TrustedKey] = []
    seen: set[str] = set()
    for i, entry in enumerate(parsed.keys):
        if entry.name in seen:
            raise ConfigError(f"{FLAG} {path}: keys.{i}.name: {entry.name!r} is listed twice")
        seen.add(entry.name)
        where = f"{FLAG} {path}: keys.{i}.public_key"
        if entry.public_key.lstrip().startswith("-----BEGIN"):
            pem = entry.public_key.encode()
        else:
            key_path = (path.parent / entry.public_key).expanduser()
            try:
                pem = key_path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"{where}: cannot read {key_path} ({exc.strerror})") from None
        key = load_public_key(pem, where)
        out.append(TrustedKey(entry.name, signing.key_fingerprint(key), key, tuple(entry.adapters)))
    return out


class TrustPolicy:
    """The keys of one trust file, re-read whenever the file changes (see module docs)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().absolute()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._keys: list[TrustedKey] = []
        # Verdicts of this version of the file only (cleared on every reload): the hub
        # judges every listed signature on every search, an ECDSA check each.
        self._memo: dict[tuple[tuple[int, int, int], str, str, str], Verdict] = {}
        self.keys()  # a bad file is refused at start-up, not at the first request

    @classmethod
    def from_option(cls, value: str | None) -> TrustPolicy | None:
        """``--trust FILE``, else ``ADAPTERHUB_TRUST``, else None."""
        chosen = value or os.environ.get(TRUST_ENV) or None
        return cls(chosen) if chosen else None

    def keys(self) -> list[TrustedKey]:
        return self._current()[1]

    def _current(self) -> tuple[tuple[int, int, int], list[TrustedKey]]:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            # A trust file that vanished trusts nothing: never the last keys it held.
            raise ConfigError(f"{FLAG} {self.path}: cannot read ({exc.strerror})") from None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if stamp != self._stamp:
                self._keys = load_trust_file(self.path)
                self._stamp = stamp
                self._memo = {}
            return stamp, self._keys

    def judge(self, name: str, raw_manifest: bytes, manifest: Manifest, data: bytes) -> Verdict:
        """:func:`judge` with this file's keys, remembered until the file changes."""
        stamp, keys = self._current()
        # Keyed by the file's stamp too: a verdict made with keys that a reload replaced
        # meanwhile can never be served for the new file.
        memo_key = (stamp, name, signing.signature_id(raw_manifest), signing.signature_id(data))
        with self._lock:
            hit = self._memo.get(memo_key)
        if hit is not None:
            return hit
        verdict = judge(keys, name, raw_manifest, manifest, data)
        with self._lock:
            if len(self._memo) >= 100_000:
                self._memo.clear()  # bounded: nothing grows without limit
            self._memo[memo_key] = verdict
        return verdict


def judge(keys: list[TrustedKey] | None, name: str, raw_manifest: bytes, manifest: Manifest, data: bytes) -> Verdict:
    """The verdict on one signature of ``name``'s version (``keys`` None: no trust file)."""
    sid = signing.signature_id(data)
    try:
        bundle = signing.parse_bundle(data)
    except SignatureError as exc:
        return Verdict(sid, MALFORMED, None, None, str(exc))
    files = signing.files_mismatch(bundle, raw_manifest, manifest)
    if keys is None:
        return Verdict(sid, UNCHECKED, None, bundle.key_hint, files or "")
    candidates = [k for k in keys if bundle.key_hint is None or k.fingerprint == bundle.key_hint]
    if not candidates:
        return Verdict(sid, UNKNOWN_KEY, None, bundle.key_hint)
    signer = next((k for k in candidates if signing.signature_matches(bundle, k.public_key)), None)
    if signer is None:
        return Verdict(sid, MISMATCH, candidates[0].name, bundle.key_hint, "the envelope fails the key's check")
    if files is not None:
        return Verdict(sid, MISMATCH, signer.name, bundle.key_hint, files)
    # The same key may be listed under several names with different globs.
    covering = next((k for k in candidates if k.fingerprint == signer.fingerprint and k.covers(name)), None)
    if covering is None:
        return Verdict(sid, NOT_FOR_NAME, signer.name, bundle.key_hint, f"it may sign {', '.join(signer.patterns)}")
    return Verdict(sid, TRUSTED, covering.name, bundle.key_hint)


def refusal(ref: str, verdicts: list[Verdict]) -> str | None:
    """None when a signature is trusted; else the one-line reason ``ref`` is refused."""
    if any(v.trusted for v in verdicts):
        return None
    if not verdicts:
        return f"{ref} is unsigned (no signature is stored with it)"
    ordered = sorted(verdicts, key=lambda v: _RANK.get(v.status, 9))
    best = ordered[0]
    others = f"; {len(verdicts) - 1} other signature(s) also untrusted" if len(verdicts) > 1 else ""
    return f"{ref} is not signed by a trusted key: {best.line()}{others}"
