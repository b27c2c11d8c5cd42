"""The adapter artifact on disk: ``manifest.json`` + ``adapter.safetensors``.

Writing::

    from adapterhub.artifact import write_adapter
    manifest = write_adapter(
        "out/my-adapter",
        {                                   # every Manifest field except ``files``
            "name": "my-adapter", "method": "lora", "method_kind": "reparameterization",
            "method_config": cfg.model_dump(), "base": fingerprint(model, "tiny-random-llama"),
            "task": "summarize", "provenance": {...},
        },
        adapter.state_tensors(),            # name -> Tensor, saved as adapter.safetensors
        extra_files={"README.md": b"..."},  # optional, listed and hashed like the weights
    )

``format_version`` defaults to the current one; a :class:`~adapterhub.manifest.Manifest`
can be passed instead of the dict (its ``files`` are recomputed). Sizes and sha256 of every
file are computed from the bytes actually written. The write is atomic: a new directory
is staged next to ``out_dir`` and renamed into place; an existing directory (e.g. one
holding training logs) is updated file by file with a stale manifest removed first and
the new ``manifest.json`` written last, so a reader never sees a manifest whose files
are not complete. An existing adapter is only replaced with ``overwrite=True``.

Reading::

    manifest, tensors = read_adapter("out/my-adapter")   # verifies size + sha256

Every ``*.safetensors`` file the manifest lists is loaded through
:mod:`adapterhub.safeio` (strict validation, never pickle) and merged into one dict.
``verify=True`` (the default) checks each listed file's size and sha256 first and raises
:class:`~adapterhub.errors.IntegrityError` naming the file; the weights are hashed and
parsed from the same bytes, so what was verified is what is loaded.

``update_manifest(dir, metrics=..., forgetting=...)`` revalidates and atomically
rewrites the manifest (files and format_version cannot be changed this way).
``sha256_file(path)`` hashes in 1 MiB chunks.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from adapterhub.errors import ArtifactError, IntegrityError, ManifestError
from adapterhub.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    WEIGHTS_NAME,
    FileEntry,
    Manifest,
    read_manifest,
)
from adapterhub.safeio import (
    atomic_write_bytes,
    check_finite,
    fsync_dir,
    load_safetensors_bytes,
    read_exactly,
    save_safetensors,
)

CHUNK = 1 << 20
_FROZEN_FIELDS = {"files", "format_version"}

__all__ = [
    "write_adapter", "read_adapter", "read_adapter_bytes", "open_adapter", "OpenedAdapter",
    "verify_adapter", "update_manifest", "sha256_file", "sha256_bytes",
]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest_fields(manifest: Manifest | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(manifest, Manifest):
        fields = manifest.model_dump()
    elif isinstance(manifest, Mapping):
        fields = dict(manifest)
    else:
        raise ArtifactError(f"manifest must be a Manifest or a mapping of its fields, got {type(manifest).__name__}")
    fields.pop("files", None)
    fields.setdefault("format_version", FORMAT_VERSION)
    return fields


def _build_manifest(fields: dict[str, Any], files: list[FileEntry], source: str) -> Manifest:
    try:
        return Manifest.model_validate({**fields, "files": files})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise ManifestError(f"{source}: invalid manifest at {loc}: {first['msg']}") from None


def _write_files(
    directory: Path,
    tensors: Mapping[str, torch.Tensor],
    extra_files: Mapping[str, bytes | str | os.PathLike[str]],
    metadata: Mapping[str, str] | None,
) -> list[FileEntry]:
    entries: list[FileEntry] = []
    weights = directory / WEIGHTS_NAME
    size = save_safetensors(tensors, weights, metadata)
    entries.append(FileEntry(path=WEIGHTS_NAME, size=size, sha256=sha256_file(weights)))
    for name, content in extra_files.items():
        if name in (WEIGHTS_NAME, MANIFEST_NAME) or not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ArtifactError(f"extra file name {name!r} must be a plain file name other than {WEIGHTS_NAME}/{MANIFEST_NAME}")
        data = content if isinstance(content, bytes) else Path(content).read_bytes()
        atomic_write_bytes(directory / name, data)
        entries.append(FileEntry(path=name, size=len(data), sha256=sha256_bytes(data)))
    return entries


def write_adapter(
    out_dir: str | os.PathLike[str],
    manifest: Manifest | Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    extra_files: Mapping[str, bytes | str | os.PathLike[str]] | None = None,
    *,
    metadata: Mapping[str, str] | None = None,
    overwrite: bool = False,
    require_finite: bool = True,
) -> Manifest:
    """Write an adapter directory atomically and return its final manifest.

    ``manifest`` is every Manifest field except ``files`` (a dict, or a Manifest whose
    files are replaced). ``extra_files`` maps plain names to bytes or a source path.
    NaN/Inf tensors are refused unless ``require_finite=False``.
    """
    out = Path(out_dir)
    fields = _manifest_fields(manifest)
    if require_finite:
        check_finite(tensors, str(out / WEIGHTS_NAME))
    # Validate everything except the files before writing a byte, with a placeholder
    # entry, so a bad field never leaves weights behind.
    placeholder = FileEntry(path=WEIGHTS_NAME, size=0, sha256="0" * 64)
    _build_manifest(fields, [placeholder], str(out / MANIFEST_NAME))
    extras = dict(extra_files or {})

    if out.exists() and not out.is_dir():
        raise ArtifactError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if (out / MANIFEST_NAME).exists() and not overwrite:
            raise ArtifactError(f"{out}: already holds an adapter (pass overwrite=True to replace it)")
        # In place: hide the old manifest first so the half-updated directory is never
        # mistaken for a complete adapter, then write the manifest last.
        (out / MANIFEST_NAME).unlink(missing_ok=True)
        entries = _write_files(out, tensors, extras, metadata)
        final = _build_manifest(fields, entries, str(out / MANIFEST_NAME))
        atomic_write_bytes(out / MANIFEST_NAME, final.to_json().encode())
        return final

    # New (or empty) directory: stage everything next to it, then one rename.
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.staging"
    stage.mkdir()
    try:
        entries = _write_files(stage, tensors, extras, metadata)
        final = _build_manifest(fields, entries, str(out / MANIFEST_NAME))
        atomic_write_bytes(stage / MANIFEST_NAME, final.to_json().encode())
        if out.is_dir():
            out.rmdir()  # empty (checked above); rename onto a non-empty dir would fail
        try:
            os.rename(stage, out)
        except OSError as exc:
            raise ArtifactError(f"{out}: another writer created it concurrently ({exc.strerror})") from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    fsync_dir(out.parent)
    return final


def _read_listed(directory: Path, entry: FileEntry, verify: bool) -> memoryview:
    """A listed file's bytes (regular files only; size checked when ``verify``; not hashed)."""
    path = directory / entry.path
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise IntegrityError(f"{path}: listed in the manifest but missing") from None
    # A symlink could point anywhere (outside the store); listed files must be real files.
    if not stat.S_ISREG(st.st_mode):
        raise IntegrityError(f"{path}: listed in the manifest but is not a regular file")
    if verify and st.st_size != entry.size:
        raise IntegrityError(f"{path}: size {st.st_size} bytes, manifest records {entry.size} (truncated or replaced?)")
    with open(path, "rb") as fh:
        data = read_exactly(fh, entry.size if verify else os.fstat(fh.fileno()).st_size)
    if data is None:
        raise IntegrityError(f"{path}: changed size while reading, manifest records {entry.size}")
    return data


# Weights of at least this size are hashed on a helper thread while they are parsed
# (hashlib releases the GIL). Below it the hash takes under ~5 ms, and waking a helper
# thread on a busy 2-core machine can cost as much: 2 MB registry pushes measured
# 1.5x boto3's time with a 1 MiB threshold, 1.2-1.3x hashing inline.
_ASYNC_HASH_BYTES = 8 << 20
_hasher: tuple[int, ThreadPoolExecutor] | None = None
_hasher_lock = threading.Lock()


def _hash_in_background(data: memoryview, min_bytes: int | None = None) -> Future[str] | str:
    global _hasher
    if len(data) < (_ASYNC_HASH_BYTES if min_bytes is None else min_bytes):
        return sha256_bytes(data)
    with _hasher_lock:
        # Keyed by pid: a forked child inherits the executor object but not its threads.
        if _hasher is None or _hasher[0] != os.getpid():
            _hasher = (os.getpid(), ThreadPoolExecutor(max_workers=2, thread_name_prefix="adapterhub-sha256"))
        pool = _hasher[1]
    return pool.submit(sha256_bytes, data)


def verify_adapter(directory: str | os.PathLike[str]) -> Manifest:
    """Check the manifest and every listed file's size and sha256 without loading tensors."""
    d = Path(directory)
    manifest = read_manifest(d)
    for entry in manifest.files:
        path = d / entry.path
        _read_listed_size_only(path, entry)
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise IntegrityError(f"{path}: sha256 {digest[:16]}... does not match the manifest's {entry.sha256[:16]}... (corrupted?)")
    return manifest


def _read_listed_size_only(path: Path, entry: FileEntry) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise IntegrityError(f"{path}: listed in the manifest but missing") from None
    if not stat.S_ISREG(st.st_mode):
        raise IntegrityError(f"{path}: listed in the manifest but is not a regular file")
    if st.st_size != entry.size:
        raise IntegrityError(f"{path}: size {st.st_size} bytes, manifest records {entry.size} (truncated or replaced?)")


def read_adapter(
    directory: str | os.PathLike[str],
    verify: bool = True,
    *,
    device: str | torch.device = "cpu",
    require_finite: bool = False,
) -> tuple[Manifest, dict[str, torch.Tensor]]:
    """Read an adapter directory: its manifest and all tensors of its safetensors files."""
    manifest, tensors, _ = read_adapter_bytes(directory, verify)
    if require_finite:
        check_finite(tensors, str(directory))
    if torch.device(device).type != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return manifest, tensors


def read_adapter_bytes(
    directory: str | os.PathLike[str], verify: bool = True
) -> tuple[Manifest, dict[str, torch.Tensor], dict[str, memoryview]]:
    """:func:`read_adapter` on CPU, also handing back each weights file's bytes as read.

    The tensors are parsed from exactly those bytes (verified against the manifest when
    ``verify``), so a push can upload them without reading and hashing the file again.
    The tensors are views into those buffers (no copy): writing to a tensor changes the
    bytes, so a caller that uploads the bytes must not modify the tensors.
    """
    opened = open_adapter(directory, verify).verified()
    return opened.manifest, opened.tensors, opened.raw


@dataclass
class OpenedAdapter:
    """An adapter read and parsed while its weights may still be being hashed.

    Returned by :func:`open_adapter`. Nothing may act on ``tensors`` or ``raw`` (apply,
    upload, cache) before :meth:`verified` has returned.
    """

    directory: Path
    manifest: Manifest
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    raw: dict[str, memoryview] = field(default_factory=dict)
    _pending: list[tuple[Path, FileEntry, Future[str] | str]] = field(default_factory=list)

    def verified(self) -> OpenedAdapter:
        """Wait for the digests; IntegrityError naming the first file that does not match."""
        pending, self._pending = self._pending, []
        for path, entry, digest in pending:
            got = digest.result() if isinstance(digest, Future) else digest
            if got != entry.sha256:
                raise IntegrityError(
                    f"{path}: sha256 {got[:16]}... does not match the manifest's {entry.sha256[:16]}... (corrupted?)"
                )
        return self


def open_adapter(directory: str | os.PathLike[str], verify: bool = True, async_hash_bytes: int | None = None) -> OpenedAdapter:
    """Read and parse an adapter while its weights are hashed on a helper thread.

    The caller can validate and plan with the tensors meanwhile (work that changes
    nothing), then must call :meth:`OpenedAdapter.verified` before acting on them. For
    a 20 MB adapter this hides the ~4 ms of parsing and planning behind the ~11 ms hash.
    If parsing fails, the digests are checked first: a corrupted file is reported as
    corrupted, not as whatever its damage looks like to the parser.

    ``async_hash_bytes``: hash files at least this big on the helper thread (default
    8 MiB). A caller with milliseconds of its own work to overlap, such as
    ``AdapterHost.load``, passes less.
    """
    d = Path(directory)
    opened = OpenedAdapter(d, read_manifest(d))
    try:
        for entry in opened.manifest.files:
            path = d / entry.path
            if not entry.path.endswith(".safetensors"):
                if verify:
                    _read_listed_size_only(path, entry)
                    opened._pending.append((path, entry, sha256_file(path)))
                continue
            data = _read_listed(d, entry, verify)
            if verify:
                opened._pending.append((path, entry, _hash_in_background(data, async_hash_bytes)))
            for name, t in load_safetensors_bytes(data, str(path)).items():
                if name in opened.tensors:
                    raise ArtifactError(f"{path}: tensor {name!r} also appears in another listed file")
                opened.tensors[name] = t
            opened.raw[entry.path] = data
        if not opened.raw:
            raise ArtifactError(f"{d / MANIFEST_NAME}: lists no .safetensors file")
    except Exception:
        opened.verified()  # an IntegrityError explains a parse failure better
        raise
    return opened


def update_manifest(directory: str | os.PathLike[str], **changes: Any) -> Manifest:
    """Revalidate the manifest with ``changes`` applied and rewrite it atomically.

    Used to attach metrics and forgetting reports after training. ``files`` and
    ``format_version`` are computed by :func:`write_adapter` and cannot be changed here.
    """
    d = Path(directory)
    frozen = _FROZEN_FIELDS & set(changes)
    if frozen:
        raise ArtifactError(f"update_manifest cannot change {', '.join(sorted(frozen))}")
    current = read_manifest(d)
    fields = current.model_dump()
    fields.update(changes)
    updated = _build_manifest(fields, list(current.files), str(d / MANIFEST_NAME))
    atomic_write_bytes(d / MANIFEST_NAME, updated.to_json().encode())
    return updated
