"""Sign → push → pull --require-signed → verify, on a local store, SeaweedFS and a hub
over HTTP; tampering and deleted signatures are refused with the reason."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from adapterhub.registry.client import Registry
from adapterhub.registry.keys import KeyInfo, load_private_key
from adapterhub.registry.local import LocalStore
from adapterhub.registry.trust import TrustPolicy

from adapterhub.errors import IntegrityError, SignatureError
from adapterhub.testing.hubserver import running_hub, token_for, write_tokens
from adapterhub.testing.seaweed import Seaweed
from adapterhub.testing.signing import make_key, write_trust

MakeAdapter = Callable[..., Path]


@pytest.fixture
def alice(tmp_path: Path) -> KeyInfo:
    return make_key(tmp_path / "keys", "alice")


@pytest.fixture
def policy(tmp_path: Path, alice: KeyInfo) -> TrustPolicy:
    return TrustPolicy(write_trust(tmp_path / "trust.yaml", {"alice": (alice, ["team/*"])}))


@pytest.fixture(params=["local", "s3", "hub"])
def target(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Where to push: a local store shared as a directory (file://), a SeaweedFS bucket
    prefix, or a live hub."""
    if request.param == "local":
        yield (tmp_path / "shared").as_uri()
    elif request.param == "s3":
        sw: Seaweed = request.getfixturevalue("seaweed")
        for k, v in sw.env().items():
            monkeypatch.setenv(k, v)
        yield f"s3://{sw.bucket}/{uuid.uuid4().hex[:10]}"
    else:
        tokens = write_tokens(tmp_path / "tokens.yaml", {"ci": ("write", ["*"])})
        monkeypatch.setenv("ADAPTERHUB_TOKEN", token_for("ci"))
        with running_hub(tmp_path / "hubstore", tokens=tokens) as hub:
            yield hub.url


def test_sign_push_pull_verify_and_deleting_the_signature_refuses(
    home: Path, target: str, make_adapter: MakeAdapter, alice: KeyInfo, policy: TrustPolicy,
) -> None:
    pusher = Registry(progress=False)
    ref = pusher.push(make_adapter(seed=11), "team/signed", to=target)
    got_ref, sid, created = pusher.sign(ref, load_private_key(str(alice.private)), to=target)
    assert (got_ref, created) == (ref, True)
    assert pusher.sign(ref, load_private_key(str(alice.private)), to=target)[1:] == (sid, False), "same key again: a no-op"

    # Another machine (a fresh registry home) pulls with --require-signed.
    puller = Registry(root=home / "puller", progress=False)
    key, path = puller.fetch(ref, target, trust=policy)
    assert key == ref and (path / "adapter.safetensors").is_file()
    verdicts = puller.signature_verdicts(ref, target, policy)[1]
    assert [(v.key, v.status) for v in verdicts] == [("alice", "trusted")]

    name, version = ref.split("@")
    pusher.delete_signature(name, version, sid, to=target)
    fresh = Registry(root=home / "puller2", progress=False)
    with pytest.raises(SignatureError, match=r"^team/signed@0\.1\.0 is unsigned"):
        fresh.fetch(ref, target, trust=policy)
    # Nothing was fetched for the refused version.
    assert not any((home / "puller2").rglob("adapter.safetensors"))


def test_a_flipped_byte_in_the_manifest_or_a_blob_fails_with_the_right_message(
    registry: Registry, make_adapter: MakeAdapter, alice: KeyInfo, policy: TrustPolicy,
) -> None:
    ref = registry.push(make_adapter(seed=12), "team/tamper")
    registry.sign(ref, load_private_key(str(alice.private)))
    store: LocalStore = registry.local
    name, version = ref.split("@")

    # A blob: the signature still covers the manifest, and the blob check catches it.
    raw = store.get_version(name, version)
    import json

    digest = json.loads(raw)["files"][0]["sha256"]
    blob = store.blob_path(digest)
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    report = registry.verify(ref)  # re-hashes: finds it corrupt and quarantines it
    assert not report["ok"] and any("corrupt" in p for p in report["problems"])
    assert [v.status for v in registry.signature_verdicts(ref, trust=policy)[1]] == ["trusted"]
    with pytest.raises(IntegrityError, match=r"blob of adapter.safetensors \(team/tamper@0.1.0\) is missing"):
        registry.fetch(ref, trust=policy)

    # The manifest: one byte of its description, still valid JSON and a valid manifest.
    ref2 = registry.push(make_adapter(seed=13), "team/tamper2")
    registry.sign(ref2, load_private_key(str(alice.private)))
    n2, v2 = ref2.split("@")
    vpath = store.version_path(n2, v2)
    text = vpath.read_bytes()
    tampered = text.replace(b'"description": ""', b'"description": "X"', 1)  # one byte more, still a valid manifest
    assert tampered != text
    vpath.chmod(0o644)
    vpath.write_bytes(tampered)
    with pytest.raises(SignatureError, match=r"alice: signature does not match \(manifest\.json differs from what was signed\)"):
        registry.fetch(ref2, trust=policy)
