"""Adapter signatures in OpenSSF model signing's format (``model-signing`` on PyPI).

A signature is a Sigstore bundle (``application/vnd.dev.sigstore.bundle.v0.3+json``)
holding a DSSE envelope over an in-toto statement whose predicate
(``https://model_signing/signature/v1.0``) lists every file of the adapter directory
with its sha256: ``manifest.json`` (the exact stored manifest bytes) and each file the
manifest pins. That is exactly what ``model_signing sign key <dir>`` produces for a
pulled adapter directory, so ``model_signing verify key <pulled dir> --signature S
--public_key K`` checks our signatures, and a signature made by that tool over a pulled
directory is one we accept.

Why the resources are computed from the manifest and not by hashing the directory:
the manifest already pins each file's sha256 and every read verifies blobs against it,
so signing and checking never read the weights a second time.

Signing goes through model-signing's own signer (the bundle is theirs byte for byte).
Checking is done here with ``cryptography`` alone: it runs on every guarded pull and
serve load, model-signing takes ~0.5 s to import, and we need a stricter check than
theirs anyway (the signed file set must equal the manifest's, not just hash-consistent).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adapterhub.errors import SignatureError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import (
        EllipticCurvePrivateKey,
        EllipticCurvePublicKey,
    )

    from adapterhub.manifest import Manifest

MANIFEST_NAME = "manifest.json"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
MAX_SIGNATURE_BYTES = 64 * 1024  # a bundle for a handful of files is ~2 kB
CURVES = ("secp256r1", "secp384r1", "secp521r1")  # what model-signing accepts


@dataclass(frozen=True)
class Bundle:
    """A parsed signature: what can be read without a key."""

    id: str  # sha256 of the bundle bytes: its object name in a store
    key_hint: str | None  # sha256 of the signer's public key (PEM SPKI), as model-signing records it
    payload: bytes
    sig: bytes
    resources: dict[str, str]  # file name -> sha256 hex, as signed


def signature_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def key_fingerprint(public_key: EllipticCurvePublicKey) -> str:
    """model-signing's key hint: sha256 of the PEM SubjectPublicKeyInfo."""
    from cryptography.hazmat.primitives import serialization

    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def check_curve(public_key: Any, what: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name not in CURVES:
        raise SignatureError(f"{what}: not an elliptic-curve P-256/384/521 key (the kinds model-signing signs with)")


def signed_files(raw_manifest: bytes, manifest: Manifest) -> dict[str, str]:
    """What a signature of this version must list: the manifest bytes and every pinned file."""
    out = {f.path: f.sha256 for f in manifest.files}
    out[MANIFEST_NAME] = hashlib.sha256(raw_manifest).hexdigest()
    return out


def sign_manifest(raw_manifest: bytes, manifest: Manifest, private_key: EllipticCurvePrivateKey) -> bytes:
    """A model-signing bundle over this version's files (no file is read: see module docs)."""
    import pathlib

    from model_signing import manifest as ms_manifest
    from model_signing._hashing.hashing import Digest
    from model_signing._signing import sign_ec_key, sign_sigstore_pb
    from model_signing._signing.signing import Payload

    class _LoadedKeySigner(sign_ec_key.Signer):
        # model-signing's signer reads a key file; ours is already loaded (and decrypted).
        def __init__(self, key: EllipticCurvePrivateKey) -> None:
            self._private_key = key

    check_curve(private_key.public_key(), "signing key")
    items = [
        ms_manifest.FileManifestItem(path=pathlib.PurePosixPath(path), digest=Digest("sha256", bytes.fromhex(digest)))
        for path, digest in sorted(signed_files(raw_manifest, manifest).items())
    ]
    # ignore_paths as model-signing's CLI records them when signing a directory in place.
    serialization = ms_manifest._FileSerialization("sha256", allow_symlinks=False, ignore_paths=[])
    label = f"{manifest.name}@{manifest.version}"
    payload = Payload(ms_manifest.Manifest(label, items, serialization))
    signature = _LoadedKeySigner(private_key).sign(payload)
    assert isinstance(signature, sign_sigstore_pb.Signature)  # what its key signer makes
    return str(signature.bundle.to_json()).encode()


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise SignatureError(f"not a model-signing bundle: {what} missing")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"not a model-signing bundle: {what} is not base64") from None


def parse_bundle(data: bytes) -> Bundle:
    """Read a bundle's envelope and statement (no key needed); SignatureError if malformed."""
    if len(data) > MAX_SIGNATURE_BYTES:
        raise SignatureError(f"signature is {len(data)} bytes, over the {MAX_SIGNATURE_BYTES} byte limit")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise SignatureError("not a model-signing bundle: not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("dsseEnvelope"), dict):
        raise SignatureError("not a model-signing bundle: no DSSE envelope (only key-signed bundles are supported)")
    env = doc["dsseEnvelope"]
    if env.get("payloadType") != PAYLOAD_TYPE:
        raise SignatureError(f"not a model-signing bundle: payload type {str(env.get('payloadType'))[:60]!r}")
    sigs = env.get("signatures")
    if not isinstance(sigs, list) or len(sigs) != 1 or not isinstance(sigs[0], dict):
        raise SignatureError("not a model-signing bundle: expected exactly one DSSE signature")
    payload = _b64(env.get("payload"), "payload")
    sig = _b64(sigs[0].get("sig"), "signature")
    material = doc.get("verificationMaterial") or {}
    hint = (material.get("publicKey") or {}).get("hint") if isinstance(material, dict) else None
    try:
        stmt = json.loads(payload)
        if stmt["_type"] != STATEMENT_TYPE or stmt["predicateType"] != PREDICATE_TYPE:
            raise SignatureError("not a model-signing v1.0 statement")
        resources: dict[str, str] = {}
        for r in stmt["predicate"]["resources"]:
            if r["algorithm"] != "sha256" or not isinstance(r["name"], str) or r["name"] in resources:
                raise SignatureError(f"signature lists {str(r['name'])[:80]!r} twice or with a hash other than sha256")
            resources[r["name"]] = str(r["digest"]).lower()
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, SignatureError):
            raise
        raise SignatureError("not a model-signing bundle: the statement does not parse") from None
    return Bundle(id=signature_id(data), key_hint=hint if isinstance(hint, str) else None, payload=payload,
                  sig=sig, resources=resources)


def _pae(payload: bytes) -> bytes:
    # DSSE's pre-authentication encoding (what the key actually signs).
    return b" ".join([f"DSSEv1 {len(PAYLOAD_TYPE)} {PAYLOAD_TYPE} {len(payload)}".encode(), payload])


def signature_matches(bundle: Bundle, public_key: EllipticCurvePublicKey) -> bool:
    """Does ``public_key`` verify the bundle's envelope? (The file list is checked apart.)"""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    size = public_key.curve.key_size
    algo = hashes.SHA256() if size == 256 else hashes.SHA384() if size == 384 else hashes.SHA512()
    try:
        public_key.verify(bundle.sig, _pae(bundle.payload), ec.ECDSA(algo))
    except InvalidSignature:
        return False
    return True


def files_mismatch(bundle: Bundle, raw_manifest: bytes, manifest: Manifest) -> str | None:
    """None when the bundle lists exactly this version's files; else what differs (one phrase)."""
    want = signed_files(raw_manifest, manifest)
    got = bundle.resources
    for path in sorted(set(want) | set(got)):
        if path not in got:
            return f"{path} is not signed"
        if path not in want:
            return f"signed file {path} is not in this version"
        if got[path] != want[path]:
            return f"{path} differs from what was signed"
    return None
