"""The Registry facade over the local store and a file:// remote."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from adapterhub.registry.client import Published, Registry
from adapterhub.registry.local import LocalStore

from adapterhub.errors import (
    AdapterNotFoundError,
    ArtifactError,
    ConfigError,
    IncompatibleAdapterError,
    IntegrityError,
    InvalidNameError,
    ManifestError,
    UnsafeFileError,
    VersionExistsError,
)
from adapterhub.manifest import MANIFEST_NAME, WEIGHTS_NAME

MakeAdapter = Callable[..., Path]


def _store_state(root: Path) -> list[str]:
    """Everything under the store except caches that reads may create."""
    if not root.exists():
        return []
    out = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath, f).relative_to(root)
            if p.parts[0] in ("views", "pending") or p.name.startswith(("index.sqlite", "index.lock")):
                continue
            out.append(str(p))
    return sorted(out)


def _forge_weights(adapter: Path, data: bytes) -> None:
    """Replace adapter.safetensors and make the manifest agree (so only the format is wrong)."""
    (adapter / WEIGHTS_NAME).write_bytes(data)
    m = json.loads((adapter / MANIFEST_NAME).read_text())
    for f in m["files"]:
        if f["path"] == WEIGHTS_NAME:
            f["size"], f["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    (adapter / MANIFEST_NAME).write_text(json.dumps(m))


def _edit_manifest(adapter: Path, **changes: object) -> None:
    m = json.loads((adapter / MANIFEST_NAME).read_text())
    m.update(changes)
    (adapter / MANIFEST_NAME).write_text(json.dumps(m))


def test_push_pull_roundtrip(registry: Registry, make_adapter: MakeAdapter) -> None:
    a = make_adapter(seed=1)
    assert registry.push(a, "team/sent") == "team/sent@0.1.0"
    assert registry.push(a, "team/sent", tag="prod") == "team/sent@0.1.1"
    assert registry.push(a, "team/sent", version="2.0.0") == "team/sent@2.0.0"
    for ref, version in (("team/sent", "2.0.0"), ("team/sent:prod", "0.1.1"), ("team/sent@0.1.0", "0.1.0"), ("team/sent:latest", "2.0.0")):
        path = registry.pull(ref)
        manifest = json.loads((path / MANIFEST_NAME).read_text())
        assert (manifest["name"], manifest["version"]) == ("team/sent", version)
        assert (path / WEIGHTS_NAME).read_bytes() == (a / WEIGHTS_NAME).read_bytes()
    # the same bytes again: a no-op (a retried upload succeeds); different bytes: refused
    assert registry.publish(a, "team/sent", version="2.0.0") == Published("team/sent@2.0.0", created=False)
    b = make_adapter(seed=2)
    with pytest.raises(VersionExistsError, match="different contents"):
        registry.push(b, "team/sent", version="2.0.0")
    assert registry.pull("team/sent@2.0.0").joinpath(WEIGHTS_NAME).read_bytes() == (a / WEIGHTS_NAME).read_bytes()
    assert registry.gc(grace_s=0).blobs  # the refused push's blob is an orphan that gc reclaims
    # an older explicit version does not move `latest` backwards
    registry.push(a, "team/sent", version="1.5.0")
    assert registry.resolve(registry.local, "team/sent") == ("team/sent", "2.0.0")
    assert len(list(registry.local.iter_blobs())) == 1  # identical weights stored once


def test_pull_reads_through_artifact_reader(registry: Registry, make_adapter: MakeAdapter) -> None:
    from adapterhub.artifact import read_adapter

    a = make_adapter(seed=2)
    registry.push(a, "x")
    manifest, tensors = read_adapter(registry.pull("x"))
    _, original = read_adapter(a)
    assert manifest.name == "x" and set(tensors) == set(original)
    assert all(torch.equal(tensors[k], original[k]) for k in tensors)


def test_missing_refs(registry: Registry, make_adapter: MakeAdapter) -> None:
    with pytest.raises(AdapterNotFoundError, match="no adapter named 'nope'"):
        registry.pull("nope")
    registry.push(make_adapter(), "x")
    with pytest.raises(AdapterNotFoundError):
        registry.pull("x@9.9.9")
    with pytest.raises(AdapterNotFoundError):
        registry.pull("x:nosuchtag")


@pytest.mark.parametrize(
    "damage, error",
    [
        ("nan", ArtifactError),
        ("inf", ArtifactError),
        ("unknown_field", ManifestError),
        ("format_version", ManifestError),
        ("rank_mismatch", IncompatibleAdapterError),
        ("unknown_config_field", ConfigError),
        ("unexpected_key", IncompatibleAdapterError),
        ("missing_key", IncompatibleAdapterError),
        ("lfs_pointer", UnsafeFileError),
        ("pickle", UnsafeFileError),
        ("bin_renamed", UnsafeFileError),
        ("truncated_listed", IntegrityError),
        ("truncated_forged", UnsafeFileError),
        ("bit_flip", IntegrityError),
    ],
)
def test_push_refuses_bad_artifacts(registry: Registry, make_adapter: MakeAdapter, damage: str, error: type[Exception]) -> None:
    from adapterhub.artifact import write_adapter

    a = make_adapter(seed=5)
    before = _store_state(registry.local.root)
    m = json.loads((a / MANIFEST_NAME).read_text())
    weights = a / WEIGHTS_NAME
    if damage in ("nan", "inf", "unexpected_key", "missing_key"):
        from adapterhub.artifact import read_adapter

        _, t = read_adapter(a)
        key = sorted(t)[0]
        if damage == "nan":
            t[key][0, 0] = float("nan")
        elif damage == "inf":
            t[key][0, 0] = float("inf")
        elif damage == "unexpected_key":
            t["model.layers.0.mlp.weird"] = torch.zeros(2)
        else:
            del t[key]
        m.pop("files")
        write_adapter(a, m, t, overwrite=True, require_finite=False)
    elif damage == "unknown_field":
        _edit_manifest(a, surprise="field")
    elif damage == "format_version":
        _edit_manifest(a, format_version=99)
    elif damage == "rank_mismatch":
        _edit_manifest(a, method_config={**m["method_config"], "r": 8})
    elif damage == "unknown_config_field":
        _edit_manifest(a, method_config={**m["method_config"], "rnak": 4})
    elif damage == "lfs_pointer":
        _forge_weights(a, b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"a" * 64 + b"\nsize 1234\n")
    elif damage == "pickle":
        _forge_weights(a, pickle.dumps({"w": [1.0, 2.0]}))
    elif damage == "bin_renamed":
        buf = io.BytesIO()
        torch.save({"w": torch.zeros(4)}, buf)  # a real .bin (zip+pickle); never loaded
        _forge_weights(a, buf.getvalue())
    elif damage == "truncated_listed":
        weights.write_bytes(weights.read_bytes()[:-10])
    elif damage == "truncated_forged":
        _forge_weights(a, weights.read_bytes()[:-10])
    elif damage == "bit_flip":
        data = bytearray(weights.read_bytes())
        data[-3] ^= 0x10
        weights.write_bytes(bytes(data))
    with pytest.raises(error) as info:
        registry.push(a, "team/bad")
    assert "\n" not in str(info.value)
    assert _store_state(registry.local.root) == before, "a refused push must leave the store unchanged"


@pytest.mark.parametrize("name", ["../../etc", "/abs/path", "a/../../b", "nul\x00", "x" * 300, "ａdapter"])
def test_push_refuses_bad_names(registry: Registry, make_adapter: MakeAdapter, name: str) -> None:
    a = make_adapter()
    with pytest.raises(InvalidNameError):
        registry.push(a, name)
    assert _store_state(registry.local.root) == []


def test_tag_rm_and_gc(registry: Registry, make_adapter: MakeAdapter) -> None:
    a1, a2 = make_adapter(seed=1), make_adapter(seed=2)
    registry.push(a1, "x", version="1.0.0")
    registry.push(a2, "x", version="1.1.0", tag="prod")
    assert registry.tag("x@1.0.0", "stable") == "x@1.0.0"
    assert registry.local.list_tags("x") == {"latest": "1.1.0", "prod": "1.1.0", "stable": "1.0.0"}
    with pytest.raises(InvalidNameError, match="--all"):
        registry.rm("x")
    assert registry.rm("x@1.1.0") == ["x@1.1.0"]
    # tags on the removed version went first; latest falls back to the remaining version
    assert registry.local.list_tags("x") == {"latest": "1.0.0", "stable": "1.0.0"}
    plan = registry.gc(dry_run=True, grace_s=0)
    assert len(plan.blobs) == 1 and plan.blob_bytes > 0
    assert len(list(registry.local.iter_blobs())) == 2  # dry run deletes nothing
    registry.gc(grace_s=0)
    assert len(list(registry.local.iter_blobs())) == 1
    assert registry.pull("x").is_dir()  # the live version is intact
    assert registry.rm("x:stable") == ["x:stable"]
    assert registry.rm("x", all_versions=True) == ["x@1.0.0"]
    registry.gc(grace_s=0)
    assert list(registry.local.iter_blobs()) == []


def test_gc_spares_young_blobs(registry: Registry, make_adapter: MakeAdapter) -> None:
    a = make_adapter(seed=9)
    registry.push(a, "x", version="1.0.0")
    registry.rm("x@1.0.0")
    assert registry.gc(grace_s=3600).blobs == []  # a push in flight could still reference it
    assert len(registry.gc(grace_s=0).blobs) == 1


def test_verify_finds_and_quarantines(registry: Registry, make_adapter: MakeAdapter) -> None:
    a = make_adapter(seed=3)
    registry.push(a, "x", version="1.0.0")
    assert registry.verify()["ok"]
    digest = next(registry.local.iter_blobs())
    blob = registry.local.blob_path(digest)
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    report = registry.verify("x@1.0.0")
    assert not report["ok"] and "corrupt" in report["problems"][0]
    with pytest.raises(IntegrityError):
        registry.pull("x@1.0.0")
    # re-pushing the same bytes restores the quarantined blob (a no-op for the version)
    assert registry.publish(a, "x", version="1.0.0").created is False
    assert registry.verify()["ok"] and registry.pull("x@1.0.0").is_dir()


def test_evaluation_records(registry: Registry, make_adapter: MakeAdapter) -> None:
    registry.push(make_adapter(), "x", version="1.0.0")
    manifest_before = registry.local.get_version("x", "1.0.0")
    registry.attach_evaluation("x@1.0.0", {"kind": "forgetting", "rows": [{"task": "t", "delta": -0.1}]})
    registry.attach_evaluation("x", {"kind": "eval", "rougeL": 0.4})
    recs = registry.evaluations("x@1.0.0")
    assert [r["kind"] for r in recs] == ["forgetting", "eval"]
    assert registry.local.get_version("x", "1.0.0") == manifest_before
    assert registry.show("x")["evaluations"] == recs
    with pytest.raises(ConfigError):
        registry.attach_evaluation("x", {"bad": float("nan")})


def test_show(registry: Registry, make_adapter: MakeAdapter) -> None:
    registry.push(make_adapter(metrics={"sentiment-rt": {"accuracy": 0.81}}), "team/s", tag="prod")
    info = registry.show("team/s:prod")
    assert info["ref"] == "team/s@0.1.0" and info["tags"] == ["latest", "prod"]
    assert info["manifest"]["metrics"] == {"sentiment-rt": {"accuracy": 0.81}}


def test_file_remote_push_pull_and_offline_cache(registry: Registry, make_adapter: MakeAdapter, tmp_path: Path) -> None:
    from adapterhub.registry import remotes

    share = tmp_path / "share"
    remotes.add_remote("team", share.as_uri())
    a = make_adapter(seed=4)
    assert registry.push(a, "team/s", version="1.0.0", to="team") == "team/s@1.0.0"
    assert LocalStore(share).list_versions("team/s") == ["1.0.0"]
    assert registry.local.list_names() is not None and list(registry.local.list_names()) == []
    path = registry.pull("team/s@1.0.0", from_="team")
    assert (path / WEIGHTS_NAME).read_bytes() == (a / WEIGHTS_NAME).read_bytes()
    assert [r["name"] for r in registry.ls(from_="team")] == ["team/s"]
    # a pinned version already pulled is served from the cache without the remote
    os.rename(share, tmp_path / "share-gone")
    assert registry.pull("team/s@1.0.0", from_="team") == path


def test_tag_moving_mid_pull_gives_one_consistent_version(registry: Registry, make_adapter: MakeAdapter, tmp_path: Path) -> None:
    """The tag is resolved once; a move after that cannot mix two versions' files."""
    share = LocalStore(tmp_path / "share")
    registry.push(make_adapter(seed=1), "m", version="1.0.0", to=share.url)
    registry.push(make_adapter(seed=2), "m", version="2.0.0", to=share.url)
    registry.tag("m@1.0.0", "prod", to=share.url)

    class MovingStore(LocalStore):
        def get_version(self, name: str, version: str) -> bytes:
            raw = super().get_version(name, version)
            self.set_tag(name, "prod", "2.0.0")  # someone moves the tag right now
            return raw

    moving = MovingStore(share.root)
    registry._stores["moving"] = moving
    path = registry.pull("m:prod", from_="moving")
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    assert manifest["version"] == "1.0.0"
    want = json.loads(share.get_version("m", "1.0.0"))["files"]
    for f in want:
        assert hashlib.sha256((path / f["path"]).read_bytes()).hexdigest() == f["sha256"]
    assert share.get_tag("m", "prod") == "2.0.0"


def test_remote_config(home: Path) -> None:
    from adapterhub.registry import remotes

    from adapterhub.errors import UnknownNameError

    remotes.add_remote("team", "s3://bucket/prefix?endpoint_url=http://127.0.0.1:1")
    assert remotes.resolve_url("team") == "s3://bucket/prefix?endpoint_url=http://127.0.0.1:1"
    assert remotes.resolve_url("/srv/x").startswith("file:///")
    with pytest.raises(UnknownNameError, match="no remote named 'nope'"):
        remotes.resolve_url("nope")
    with pytest.raises(ConfigError):
        remotes.add_remote("../x", "s3://b/p")
    remotes.remove_remote("team")
    assert remotes.remotes() == {}


def test_registry_with_a_default_remote(home: Path, make_adapter: MakeAdapter, tmp_path: Path) -> None:
    share = tmp_path / "share"
    reg = Registry(share.as_uri(), progress=False)
    a = make_adapter(seed=6)
    assert reg.push(a, "d/x") == "d/x@0.1.0"  # goes to the default store
    assert LocalStore(share).list_versions("d/x") == ["0.1.0"] and list(reg.local.list_names()) == []
    assert (reg.pull("d/x") / WEIGHTS_NAME).read_bytes() == (a / WEIGHTS_NAME).read_bytes()
    assert reg.show("d/x")["store"] == share.as_uri()


def test_progress_reports_bytes_for_big_transfers(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import adapterhub.registry.client as client_mod

    from adapterhub.testing.stores import write_test_adapter

    seen: list[int] = []

    class Bar:
        def __init__(self, total: int, **_: object) -> None:
            self.total = total

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def update(self, n: int) -> None:
            seen.append(n)

    import tqdm

    monkeypatch.setattr(tqdm, "tqdm", Bar)
    big = write_test_adapter(tmp_path / "big", seed=1, width=4096, rank=64, modules=2)  # ~4.2 MB
    Registry().push(big, "p/big")
    assert sum(seen) == (big / WEIGHTS_NAME).stat().st_size
    seen.clear()
    Registry().push(write_test_adapter(tmp_path / "small", seed=2), "p/small")
    assert seen == [] and client_mod.PROGRESS_MIN_BYTES > 1_000_000  # no bar for small transfers
