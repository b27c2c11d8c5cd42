"""Signatures beside versions, on any store: sign, attach, list, judge, require.

The registry client (``registry/client.py``) delegates here; so do the hub's routes,
through the client. A signature is stored only after it was checked to be a
well-formed model-signing bundle that lists exactly the files of the version it is
attached to (no key needed for that): a store never holds a signature of something
else under a version's name. Whether it is *trusted* is decided when it is read, against
the reader's trust file (``registry/trust.py``), never when it is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapterhub.registry import signing
from adapterhub.registry.trust import TrustPolicy, Verdict, judge, refusal

from adapterhub.errors import IntegrityError, SignatureError, StoreError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

    from adapterhub.manifest import Manifest
    from adapterhub.protocols.store import SignatureStore, Store


def signature_store(store: Store) -> SignatureStore:
    from adapterhub.protocols.store import SignatureStore

    if not isinstance(store, SignatureStore):
        raise StoreError(f"{store.url} cannot hold signatures (its store plugin has no put_signature/list_signatures)")
    return store


def read_version(store: Store, name: str, version: str) -> tuple[bytes, Manifest]:
    from adapterhub.manifest import parse_manifest

    raw = store.get_version(name, version)
    manifest = parse_manifest(raw, f"{name}@{version}")
    if manifest.name != name or manifest.version != version:
        raise IntegrityError(f"{store.url}: manifest of {name}@{version} names {manifest.name}@{manifest.version}")
    return raw, manifest


def attach(store: Store, name: str, version: str, data: bytes) -> tuple[str, bool]:
    """Store an existing bundle beside name@version; (its id, whether it was new)."""
    raw, manifest = read_version(store, name, version)
    bundle = signing.parse_bundle(data)
    wrong = signing.files_mismatch(bundle, raw, manifest)
    if wrong is not None:
        raise SignatureError(f"signature does not match {name}@{version}: {wrong}")
    return bundle.id, signature_store(store).put_signature(name, version, bundle.id, data)


def sign(store: Store, name: str, version: str, key: EllipticCurvePrivateKey) -> tuple[str, bool]:
    """Sign name@version with ``key`` and store the signature; (its id, whether it was new).

    ECDSA signatures differ every time, so "the same signature again" means the same key
    over the same version: a key that already signed this version adds nothing (a retried
    ``push --sign`` stores one signature, not two).
    """
    raw, manifest = read_version(store, name, version)
    sstore = signature_store(store)
    public = key.public_key()
    fingerprint = signing.key_fingerprint(public)
    for data in sstore.list_signatures(name, version):
        try:
            bundle = signing.parse_bundle(data)
        except SignatureError:
            continue
        if (bundle.key_hint == fingerprint and signing.signature_matches(bundle, public)
                and signing.files_mismatch(bundle, raw, manifest) is None):
            return bundle.id, False
    data = signing.sign_manifest(raw, manifest, key)
    sid = signing.signature_id(data)
    return sid, sstore.put_signature(name, version, sid, data)


def listed(store: Store, name: str, version: str) -> list[bytes]:
    return signature_store(store).list_signatures(name, version)


def verdicts(store: Store, name: str, version: str, trust: TrustPolicy | None,
             known: tuple[bytes, Manifest] | None = None) -> list[Verdict]:
    """One verdict per stored signature (``trust`` None: parsed and file-checked only)."""
    raw, manifest = known if known is not None else read_version(store, name, version)
    if trust is None:
        return [judge(None, name, raw, manifest, data) for data in listed(store, name, version)]
    return [trust.judge(name, raw, manifest, data) for data in listed(store, name, version)]


def require(store: Store, name: str, version: str, trust: TrustPolicy) -> bytes:
    """The manifest bytes of name@version if a trusted key signed them; SignatureError
    with the one-line reason otherwise. Reads the store, never a cache: a signature
    deleted there, or a key removed from the trust file, refuses the next check."""
    raw, manifest = read_version(store, name, version)
    reason = refusal(f"{name}@{version}", verdicts(store, name, version, trust, (raw, manifest)))
    if reason is not None:
        raise SignatureError(reason)
    return raw
