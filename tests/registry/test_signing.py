"""The signature format: model-signing bundles over a version's files, checked both ways
with model-signing's own verifier (API and CLI) — an outside tool can check our work."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from adapterhub.registry import signing
from adapterhub.registry.client import Registry
from adapterhub.registry.keys import load_private_key
from adapterhub.registry.signatures import read_version

from adapterhub.errors import SignatureError
from adapterhub.testing.signing import make_key

MakeAdapter = Callable[..., Path]


def _signed(registry: Registry, make_adapter: MakeAdapter, tmp_path: Path) -> tuple[str, Path, Path, bytes]:
    """(ref, pulled directory, public key file, bundle) of a pushed and signed adapter."""
    key = make_key(tmp_path / "keys", "alice")
    ref = registry.push(make_adapter(seed=3), "team/x")
    registry.sign(ref, load_private_key(str(key.private)))
    _, bundles = registry.signatures(ref)
    assert len(bundles) == 1
    return ref, registry.pull(ref), key.public, bundles[0]


def test_bundle_is_model_signing_format_listing_the_manifest_and_every_file(
    registry: Registry, make_adapter: MakeAdapter, tmp_path: Path,
) -> None:
    ref, path, _, data = _signed(registry, make_adapter, tmp_path)
    doc = json.loads(data)
    assert doc["mediaType"] == signing.BUNDLE_MEDIA_TYPE
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    assert statement["predicateType"] == signing.PREDICATE_TYPE
    listed = {r["name"] for r in statement["predicate"]["resources"]}
    assert listed == {p.name for p in path.iterdir()} == {"manifest.json", "adapter.safetensors"}
    bundle = signing.parse_bundle(data)
    raw, manifest = read_version(registry.local, *ref.split("@"))
    assert signing.files_mismatch(bundle, raw, manifest) is None


def test_model_signing_api_and_cli_verify_a_pulled_signed_adapter(
    registry: Registry, make_adapter: MakeAdapter, tmp_path: Path,
) -> None:
    from model_signing import verifying

    _, path, pub, data = _signed(registry, make_adapter, tmp_path)
    sig = tmp_path / "x.sig"
    sig.write_bytes(data)
    verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(path, sig)  # raises on failure
    cli = [sys.executable, "-m", "model_signing", "verify", "key", str(path), "--signature", str(sig), "--public_key", str(pub)]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "Verification succeeded" in done.stdout, done.stderr

    # The outside tool re-hashes the files: one flipped byte in the pulled copy fails it.
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in path.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    weights = bytearray((copy / "adapter.safetensors").read_bytes())
    weights[-1] ^= 1
    (copy / "adapter.safetensors").write_bytes(bytes(weights))
    done = subprocess.run([*cli[:5], str(copy), *cli[6:]], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1 and "Signature mismatch" in done.stderr and "adapter.safetensors" in done.stderr


def test_a_signature_made_by_model_signing_over_a_pulled_directory_is_accepted(
    registry: Registry, make_adapter: MakeAdapter, tmp_path: Path,
) -> None:
    from model_signing import signing as ms_signing

    key = make_key(tmp_path / "keys", "outside")
    ref = registry.push(make_adapter(seed=4), "team/y")
    path = registry.pull(ref)
    sig = tmp_path / "outside.sig"
    ms_signing.Config().use_elliptic_key_signer(private_key=key.private).sign(path, sig)
    name, version = ref.split("@")
    sid, created = registry.put_signature(name, version, sig.read_bytes())
    assert created and sid == signing.signature_id(sig.read_bytes())


def test_a_signature_of_another_version_is_refused_before_it_is_stored(
    registry: Registry, make_adapter: MakeAdapter, tmp_path: Path,
) -> None:
    _, _, _, data = _signed(registry, make_adapter, tmp_path)
    other = registry.push(make_adapter(seed=5), "team/x")
    name, version = other.split("@")
    with pytest.raises(SignatureError, match=r"signature does not match team/x@0\.1\.1: adapter\.safetensors differs"):
        registry.put_signature(name, version, data)
    assert registry.signatures(other)[1] == []


@pytest.mark.parametrize("data, reason", [
    (b"not json", "not JSON"),
    (b'{"mediaType": "x"}', "no DSSE envelope"),
    (b'{"dsseEnvelope": {"payloadType": "application/vnd.in-toto+json", "payload": "!!", "signatures": [{"sig": "AA=="}]}}', "payload is not base64"),
    (b"x" * (signing.MAX_SIGNATURE_BYTES + 1), "over the"),
])
def test_malformed_bundles_are_one_line_errors(data: bytes, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason) as info:
        signing.parse_bundle(data)
    assert "\n" not in str(info.value)


def test_a_tampered_envelope_fails_the_key_check(registry: Registry, make_adapter: MakeAdapter, tmp_path: Path) -> None:
    _, _, pub, data = _signed(registry, make_adapter, tmp_path)
    from adapterhub.registry.trust import load_public_key

    key = load_public_key(pub.read_bytes(), "test")
    bundle = signing.parse_bundle(data)
    assert signing.signature_matches(bundle, key)
    flipped = bytearray(bundle.payload)
    flipped[len(flipped) // 2] ^= 1
    from dataclasses import replace

    assert not signing.signature_matches(replace(bundle, payload=bytes(flipped)), key)
