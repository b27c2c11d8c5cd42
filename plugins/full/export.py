"""Turn a ``full`` adapter artifact into a standard transformers model directory.

Why the artifact is not *itself* a model directory: keeping ``manifest.json`` +
``adapter.safetensors`` means a full fine-tune goes through the same registry, sha256
verification, base fingerprint and provenance as every other adapter. Exporting adds
what ``from_pretrained`` needs beside the weights, taken from the base model directory:
``config.json``, the generation config and the tokenizer files.

Written atomically: the directory is staged next to ``dest`` and renamed into place, so
``dest`` is either absent or complete.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from adapterhub.artifact import read_adapter
from adapterhub.errors import ArtifactError, ConfigError
from adapterhub.manifest import MANIFEST_NAME
from adapterhub.safeio import fsync_dir, save_safetensors

MODEL_WEIGHTS = "model.safetensors"
EXPORT_MANIFEST = "adapterhub_manifest.json"
# Base-directory files never copied: weights (replaced by ours), their indexes, GGUF.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _base_files(base_dir: Path) -> list[Path]:
    if not (base_dir / "config.json").is_file():
        raise ConfigError(f"{base_dir}: not a model directory (no config.json)")
    files = []
    for p in sorted(base_dir.iterdir()):
        if not p.is_file():  # follows symlinks (HF cache snapshots link into blobs/)
            continue
        if p.name.startswith(".") or p.name.endswith(_WEIGHT_SUFFIXES) or p.name in _WEIGHT_INDEXES:
            continue
        files.append(p)
    return files


def export_model_dir(
    adapter_dir: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    base_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``dest``: ``config.json`` + ``model.safetensors`` + tokenizer files.

    ``adapter_dir`` is a ``full`` adapter artifact (verified: sizes and sha256);
    ``base_dir`` the base model directory it was trained from. The manifest is copied as
    ``adapterhub_manifest.json`` for provenance. Returns ``dest``.
    """
    src, out, base = Path(adapter_dir), Path(dest), Path(base_dir)
    manifest, tensors = read_adapter(src)
    if manifest.method != "full":
        raise ArtifactError(
            f"{src}: is a {manifest.method!r} adapter; only 'full' adapters export as a model directory"
        )
    copies = _base_files(base)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: already exists (pass overwrite=True to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.with_name(f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    stage.mkdir()
    try:
        for f in copies:
            shutil.copyfile(f, stage / f.name)
        # transformers requires metadata format=pt to accept a safetensors checkpoint.
        save_safetensors(tensors, stage / MODEL_WEIGHTS, metadata={"format": "pt"})
        shutil.copyfile(src / MANIFEST_NAME, stage / EXPORT_MANIFEST)
        for f in stage.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(stage)
        if out.exists():  # overwrite: move the old one aside first so a crash keeps one
            old = out.with_name(f".{out.name}.{uuid.uuid4().hex[:12]}.old")
            os.rename(out, old)
            os.rename(stage, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(stage, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out


__all__ = ["EXPORT_MANIFEST", "MODEL_WEIGHTS", "export_model_dir"]
