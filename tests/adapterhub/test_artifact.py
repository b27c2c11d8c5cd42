"""Adapter artifact: atomic write, verified read, integrity failures, manifest updates."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from adapterhub import artifact
from adapterhub.artifact import (
    open_adapter,
    read_adapter,
    sha256_file,
    update_manifest,
    verify_adapter,
    write_adapter,
)
from adapterhub.errors import ArtifactError, IntegrityError, ManifestError, UnsafeFileError
from adapterhub.fingerprint import fingerprint
from adapterhub.manifest import (
    MANIFEST_NAME,
    WEIGHTS_NAME,
    ForgettingReport,
    ForgettingRow,
    Manifest,
    read_manifest,
)
from adapterhub.testing.models import tiny_llama


@pytest.fixture(scope="module")
def base_fp() -> Any:
    model, _ = tiny_llama()
    return fingerprint(model, "tiny-random-llama")


def fields(base_fp: Any, **extra: Any) -> dict[str, Any]:
    return {
        "name": "demo",
        "version": "1.0.0",
        "task": "summarize",
        "method": "lora",
        "method_kind": "reparameterization",
        "method_config": {"r": 4, "alpha": 8},
        "base": base_fp,
        **extra,
    }


def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "model.layers.0.self_attn.q_proj.lora_A": torch.randn(4, 64, generator=g),
        "model.layers.0.self_attn.q_proj.lora_B": torch.randn(64, 4, generator=g),
    }


def test_write_then_read_round_trip(tmp_path: Path, base_fp: Any) -> None:
    out = tmp_path / "a"
    m = write_adapter(out, fields(base_fp), tensors(), extra_files={"README.md": b"# demo\n"})
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST_NAME, WEIGHTS_NAME, "README.md"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # staging dir gone
    w = m.file(WEIGHTS_NAME)
    assert w.size == (out / WEIGHTS_NAME).stat().st_size
    assert w.sha256 == hashlib.sha256((out / WEIGHTS_NAME).read_bytes()).hexdigest() == sha256_file(out / WEIGHTS_NAME)
    assert m.file("README.md").size == 7
    manifest, loaded = read_adapter(out)
    assert manifest == m == read_manifest(out)
    for k, v in tensors().items():
        assert torch.equal(loaded[k], v)
    assert verify_adapter(out) == m


def test_manifest_object_accepted_and_files_recomputed(tmp_path: Path, base_fp: Any) -> None:
    m1 = write_adapter(tmp_path / "a", fields(base_fp), tensors())
    m2 = write_adapter(tmp_path / "b", m1, {"x": torch.ones(3)})
    assert m2.name == m1.name and m2.file(WEIGHTS_NAME).sha256 != m1.file(WEIGHTS_NAME).sha256


def test_existing_adapter_needs_overwrite(tmp_path: Path, base_fp: Any) -> None:
    out = tmp_path / "a"
    write_adapter(out, fields(base_fp), tensors())
    with pytest.raises(ArtifactError, match="already holds an adapter"):
        write_adapter(out, fields(base_fp), {"x": torch.ones(1)})
    assert set(read_adapter(out)[1]) == set(tensors())
    write_adapter(out, fields(base_fp), {"x": torch.ones(1)}, overwrite=True)
    assert set(read_adapter(out)[1]) == {"x"}


def test_write_into_existing_non_adapter_dir_keeps_other_files(tmp_path: Path, base_fp: Any) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "train.log").write_text("step 1\n")
    write_adapter(out, fields(base_fp), tensors())
    assert (out / "train.log").read_text() == "step 1\n"
    read_adapter(out)


def test_invalid_fields_write_nothing(tmp_path: Path, base_fp: Any) -> None:
    out = tmp_path / "a"
    with pytest.raises(ManifestError, match="method_kind"):
        write_adapter(out, fields(base_fp, method_kind="magic"), tensors())
    with pytest.raises(ManifestError, match="bogus"):
        write_adapter(out, fields(base_fp, bogus=1), tensors())
    assert not out.exists() and not list(tmp_path.iterdir())


def test_nan_refused_before_writing(tmp_path: Path, base_fp: Any) -> None:
    bad = {"w": torch.tensor([1.0, float("nan")])}
    with pytest.raises(ArtifactError, match="non-finite"):
        write_adapter(tmp_path / "a", fields(base_fp), bad)
    assert not list(tmp_path.iterdir())


def test_bad_extra_file_names(tmp_path: Path, base_fp: Any) -> None:
    for name in ("../x", "manifest.json", "a/b", ""):
        with pytest.raises(ArtifactError):
            write_adapter(tmp_path / "a", fields(base_fp), tensors(), extra_files={name: b"x"})
        assert not (tmp_path / "a").exists()
    assert not list(tmp_path.iterdir())  # staging dirs cleaned up


def test_truncated_weights_detected(tmp_path: Path, base_fp: Any) -> None:
    out = tmp_path / "a"
    write_adapter(out, fields(base_fp), tensors())
    w = out / WEIGHTS_NAME
    w.write_bytes(w.read_bytes()[:-10])
    with pytest.raises(IntegrityError, match=rf"{WEIGHTS_NAME}: size .* manifest records"):
        read_adapter(out)
    # Without verification the strict parser still refuses it.
    with pytest.raises(UnsafeFileError, match="truncated"):
        read_adapter(out, verify=False)


def test_bit_flip_detected(tmp_path: Path, base_fp: Any) -> None:
    out = tmp_path / "a"
    write_adapter(out, fields(base_fp), tensors())
    w = out / WEIGHTS_NAME
    data = bytearray(w.read_bytes())
    data[-5] ^= 0x01
    w.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        read_adapter(out)
    with pytest.raises(IntegrityError, match="sha256"):
        verify_adapter(out)


@pytest.mark.parametrize("threaded", [False, True])
def test_open_adapter_defers_the_digest_until_verified(tmp_path: Path, base_fp: Any, monkeypatch: pytest.MonkeyPatch, threaded: bool) -> None:
    if threaded:  # the path big adapters take: sha256 on the helper thread
        monkeypatch.setattr(artifact, "_ASYNC_HASH_BYTES", 0)
    out = tmp_path / "a"
    write_adapter(out, fields(base_fp), tensors())
    opened = open_adapter(out)
    assert opened.verified() is opened and opened.verified() is opened  # repeatable
    assert all(torch.equal(opened.tensors[k], v) for k, v in tensors().items())
    w = out / WEIGHTS_NAME
    data = bytearray(w.read_bytes())
    data[-5] ^= 0x01  # a weight byte: parses fine, only the digest can tell
    w.write_bytes(bytes(data))
    flipped = open_adapter(out)  # no error yet: the digest is still being computed
    with pytest.raises(IntegrityError, match="sha256 .* does not match"):
        flipped.verified()
    # A damaged header is reported as corruption (the digest), not as a parse error.
    data[-5] ^= 0x01
    data[8] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256 .* does not match"):
        open_adapter(out)
    with pytest.raises(UnsafeFileError):
        open_adapter(out, verify=False)


def test_extra_file_corruption_and_missing(tmp_path: Path, base_fp: Any) -> None:
    out = tmp_path / "a"
    write_adapter(out, fields(base_fp), tensors(), extra_files={"notes.txt": b"abc"})
    (out / "notes.txt").write_bytes(b"abd")
    with pytest.raises(IntegrityError, match="notes.txt"):
        read_adapter(out)
    (out / "notes.txt").unlink()
    with pytest.raises(IntegrityError, match="notes.txt: listed in the manifest but missing"):
        read_adapter(out)


def test_symlinked_weights_refused(tmp_path: Path, base_fp: Any) -> None:
    out = tmp_path / "a"
    write_adapter(out, fields(base_fp), tensors())
    outside = tmp_path / "outside.safetensors"
    os.replace(out / WEIGHTS_NAME, outside)
    (out / WEIGHTS_NAME).symlink_to(outside)
    with pytest.raises(IntegrityError, match="not a regular file"):
        read_adapter(out)


def test_pickle_weights_refused_even_if_manifest_matches(tmp_path: Path, base_fp: Any) -> None:
    """A manifest that honestly hashes a pickle file still never gets it unpickled."""
    out = tmp_path / "a"
    write_adapter(out, fields(base_fp), tensors())
    torch.save({"w": torch.ones(2)}, out / WEIGHTS_NAME)
    data = (out / WEIGHTS_NAME).read_bytes()
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["files"][0].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(UnsafeFileError, match="zip"):
        read_adapter(out)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest.json"):
        read_adapter(tmp_path)


def test_update_manifest(tmp_path: Path, base_fp: Any) -> None:
    out = tmp_path / "a"
    m = write_adapter(out, fields(base_fp), tensors())
    report = ForgettingReport(threshold=0.05, rows=[ForgettingRow(task="qa", metric="rougeL", base=0.3, adapted=0.2, delta=-0.1, flagged=True)])
    m2 = update_manifest(out, metrics={"summarize": {"rougeL": 0.41}}, forgetting=report)
    assert m2.metrics == {"summarize": {"rougeL": 0.41}} and m2.forgetting == report
    assert m2.files == m.files and read_manifest(out) == m2
    read_adapter(out)  # still verifies: weights untouched
    with pytest.raises(ArtifactError, match="cannot change files"):
        update_manifest(out, files=[])
    with pytest.raises(ManifestError, match="metrics"):
        update_manifest(out, metrics={"x": {"y": "not a number"}})
    assert read_manifest(out) == m2  # a refused update leaves the manifest as it was
    assert isinstance(m2, Manifest)


def test_full_finetune_style_multi_file(tmp_path: Path, base_fp: Any) -> None:
    """Every listed .safetensors file is loaded; a key in two files is refused."""
    from adapterhub.artifact import sha256_bytes
    from adapterhub.safeio import save_safetensors

    out = tmp_path / "a"
    m = write_adapter(out, fields(base_fp, method="full", method_kind="full"), {"a": torch.ones(2)})
    save_safetensors({"b": torch.zeros(3)}, out / "part2.safetensors")
    data = (out / "part2.safetensors").read_bytes()
    entries = [f.model_dump() for f in m.files] + [{"path": "part2.safetensors", "size": len(data), "sha256": sha256_bytes(data)}]
    raw = json.loads((out / MANIFEST_NAME).read_text())
    raw["files"] = entries
    (out / MANIFEST_NAME).write_text(json.dumps(raw))
    assert set(read_adapter(out)[1]) == {"a", "b"}
    save_safetensors({"a": torch.zeros(3)}, out / "part2.safetensors")
    data = (out / "part2.safetensors").read_bytes()
    raw["files"][1].update(size=len(data), sha256=sha256_bytes(data))
    (out / MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="also appears"):
        read_adapter(out)
