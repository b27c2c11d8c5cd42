"""The local content-addressed store: conformance, layout, views and integrity."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from adapterhub.registry.filestore import path_from_file_url
from adapterhub.registry.local import LocalStore

from adapterhub.errors import AdapterNotFoundError, IntegrityError, InvalidNameError
from adapterhub.manifest import MANIFEST_NAME
from adapterhub.testing.stores import StoreConformance, check_store, write_test_adapter


class TestLocalStoreConformance(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalStore:
        return LocalStore(tmp_path / "store")


class TestFileUrlStoreConformance(StoreConformance):
    """``file:///path`` through the catalog's factory (the shared-filesystem store)."""

    @pytest.fixture
    def store(self, tmp_path: Path, home: Path) -> object:
        from adapterhub.registry.remotes import open_store

        return open_store((tmp_path / "share").as_uri())


def test_check_store_function(tmp_path: Path) -> None:
    check_store(LocalStore(tmp_path / "s"), tmp_path)


def _publish(store: LocalStore, adapter: Path, name: str, version: str) -> dict:
    manifest = json.loads((adapter / MANIFEST_NAME).read_text())
    for f in manifest["files"]:
        store.put_blob(f["sha256"], adapter / f["path"])
    manifest.update(name=name, version=version)
    store.put_version(name, version, json.dumps(manifest).encode())
    return manifest


def test_layout_and_dedup(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    a = write_test_adapter(tmp_path / "a", seed=1)
    m1 = _publish(store, a, "team/x", "1.0.0")
    _publish(store, a, "solo", "1.0.0")
    digest = m1["files"][0]["sha256"]
    assert (store.root / "blobs" / "sha256" / digest[:2] / digest).is_file()
    assert (store.root / "adapters" / "team" / "x" / "versions" / "1.0.0.json").is_file()
    assert (store.root / "adapters" / "_" / "solo" / "versions" / "1.0.0.json").is_file()
    assert list(store.iter_blobs()) == [digest]  # identical bytes stored once
    assert sorted(store.list_names()) == ["solo", "team/x"]


def test_view_is_verified_and_hard_linked(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    a = write_test_adapter(tmp_path / "a", seed=2)
    m = _publish(store, a, "team/x", "1.0.0")
    view, manifest = store.open_version("team/x", "1.0.0")
    f = m["files"][0]
    assert (view / f["path"]).read_bytes() == (a / f["path"]).read_bytes()
    assert os.stat(view / f["path"]).st_ino == os.stat(store.blob_path(f["sha256"])).st_ino
    assert manifest.name == "team/x" and (view / MANIFEST_NAME).is_file()
    assert store.open_version("team/x", "1.0.0")[0] == view  # built once


def test_bit_flip_is_caught_and_quarantined(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    a = write_test_adapter(tmp_path / "a", seed=3)
    m = _publish(store, a, "team/x", "1.0.0")
    digest = m["files"][0]["sha256"]
    blob = store.blob_path(digest)
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=str(blob)) as info:
        store.open_version("team/x", "1.0.0")
    assert "corrupt" in str(info.value) and "\n" not in str(info.value)
    assert not blob.exists(), "the corrupt blob must be moved out of the way"
    assert any((store.root / "quarantine").iterdir())
    with pytest.raises(IntegrityError, match="missing"):
        store.open_version("team/x", "1.0.0")  # never served, also not after a retry
    # Re-uploading the good bytes repairs the version.
    store.put_blob(digest, a / m["files"][0]["path"])
    view, _ = store.open_version("team/x", "1.0.0")
    assert hashlib.sha256((view / m["files"][0]["path"]).read_bytes()).hexdigest() == digest


def test_truncated_blob_is_caught(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    a = write_test_adapter(tmp_path / "a", seed=4)
    m = _publish(store, a, "x", "1.0.0")
    blob = store.blob_path(m["files"][0]["sha256"])
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as fh:
        fh.truncate(100)
    with pytest.raises(IntegrityError, match="corrupt"):
        store.open_version("x", "1.0.0")


def test_get_blob_refuses_corrupt_source(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    data = b"payload" * 1000
    src = tmp_path / "p"
    src.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    store.put_blob(digest, src)
    blob = store.blob_path(digest)
    os.chmod(blob, 0o644)
    blob.write_bytes(data[:-1] + b"!")
    with pytest.raises(IntegrityError):
        store.get_blob(digest, tmp_path / "out", len(data))
    assert not (tmp_path / "out").exists()


def test_symlinked_name_dir_pointing_out_is_refused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    outside = tmp_path / "outside"
    (outside / "versions").mkdir(parents=True)
    (store.root / "adapters" / "evil").mkdir(parents=True)
    os.symlink(outside, store.root / "adapters" / "evil" / "x")
    with pytest.raises(InvalidNameError, match="outside the store"):
        store.put_version("evil/x", "1.0.0", b"{}")
    with pytest.raises(InvalidNameError):
        store.get_version("evil/x", "1.0.0")
    assert list((outside / "versions").iterdir()) == []


def test_corrupt_tag_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    store.put_version("x", "1.0.0", b"{}")
    store.tag_path("x", "latest").parent.mkdir(parents=True, exist_ok=True)
    store.tag_path("x", "latest").write_bytes(b"../../etc\n")
    with pytest.raises(IntegrityError, match="does not hold a version"):
        store.get_tag("x", "latest")
    with pytest.raises(AdapterNotFoundError):
        store.get_tag("x", "prod")


def test_file_url_parsing(tmp_path: Path) -> None:
    assert path_from_file_url("file:///srv/reg") == Path("/srv/reg")
    assert path_from_file_url("file://localhost/srv/reg") == Path("/srv/reg")
    for bad in ("file://otherhost/x", "s3://b/x", "file:relative"):
        with pytest.raises(ValueError):
            path_from_file_url(bad)


def test_manifest_constant_matches_the_manifest_module() -> None:
    from adapterhub.registry import local

    assert local.MANIFEST_NAME == MANIFEST_NAME  # kept local so `search` need not import pydantic


def test_parsed_manifests_are_shared_across_store_objects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second store object on the same root pulls without re-parsing; files are still hashed."""
    from adapterhub.registry import local

    import adapterhub.manifest as manifest_module

    local.forget_opened()
    a = write_test_adapter(tmp_path / "a", seed=11)
    store = LocalStore(tmp_path / "s")
    _publish(store, a, "team/x", "1.0.0")
    view, _ = store.open_version("team/x", "1.0.0")
    parsed: list[str] = []
    real = manifest_module.parse_manifest
    monkeypatch.setattr(manifest_module, "parse_manifest", lambda raw, source="": parsed.append(source) or real(raw, source))
    assert LocalStore(tmp_path / "s").open_version("team/x", "1.0.0")[0] == view
    assert parsed == []
    # every hit still hashes the view: a changed file is caught through a new object too
    weights = view / json.loads((a / MANIFEST_NAME).read_text())["files"][0]["path"]
    os.chmod(weights, 0o644)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        LocalStore(tmp_path / "s").open_version("team/x", "1.0.0")
    local.forget_opened()


def test_recreated_version_is_not_served_from_the_cache(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    a, b = write_test_adapter(tmp_path / "a", seed=12), write_test_adapter(tmp_path / "b", seed=13)
    _publish(store, a, "team/x", "1.0.0")
    store.open_version("team/x", "1.0.0")
    other = LocalStore(tmp_path / "s")
    other.delete_version("team/x", "1.0.0")
    m = _publish(other, b, "team/x", "1.0.0")
    view, manifest = LocalStore(tmp_path / "s").open_version("team/x", "1.0.0")
    assert manifest.files[0].sha256 == m["files"][0]["sha256"]
    assert (view / m["files"][0]["path"]).read_bytes() == (b / m["files"][0]["path"]).read_bytes()


def test_version_replaced_behind_the_cache_is_reread(tmp_path: Path) -> None:
    """Another process deleting and re-publishing a version (its stat changes) is seen."""
    store = LocalStore(tmp_path / "s")
    a, b = write_test_adapter(tmp_path / "a", seed=14), write_test_adapter(tmp_path / "b", seed=15)
    _publish(store, a, "team/y", "1.0.0")
    store.open_version("team/y", "1.0.0")
    os.unlink(store.version_path("team/y", "1.0.0"))  # not through this process's stores
    m = _publish(LocalStore(tmp_path / "s"), b, "team/y", "1.0.0")
    view, manifest = store.open_version("team/y", "1.0.0")
    assert manifest.files[0].sha256 == m["files"][0]["sha256"]
    assert (view / m["files"][0]["path"]).read_bytes() == (b / m["files"][0]["path"]).read_bytes()
