"""Base-model fingerprints: which exact frozen base an adapter belongs to.

``fingerprint(model, name)`` hashes every tensor of ``model.state_dict()`` in sorted name
order (name, dtype, shape, raw bytes) with sha256, so two bases with the same
architecture and shapes but different weights get different fingerprints. The dtype is
part of the hash: an adapter trained on a float32 base is refused on a bfloat16 load of
the same checkpoint, and :func:`check_compatible` says exactly that.

Compute it on the *frozen base* (before a method attaches its parameters): attached
adapter modules change the state dict and therefore the hash.

Hashing SmolLM2-135M takes about a second, so results are cached twice:

* in memory per model object (a weak reference, so nothing is kept alive), validated by
  a cheap signature of every tensor's name, storage pointer, shape, dtype and autograd
  version counter — any in-place write (an optimizer step, ``copy_``) bumps the counter
  and forces a re-hash;
* on disk for models loaded from a directory (:func:`remember_source`, called by
  ``load_base``): a small JSON under ``model_cache_dir()/fingerprints`` keyed by the
  directory's safetensors files (name, size, mtime) and the load dtype.
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adapterhub import paths
from adapterhub.errors import IncompatibleAdapterError
from adapterhub.manifest import BaseFingerprint
from adapterhub.safeio import atomic_write_bytes

_DISK_FORMAT = 1

Signature = tuple[tuple[str, int, tuple[int, ...], str, int], ...]


@dataclass(frozen=True)
class _Hashed:
    signature: Signature
    weights_sha256: str
    num_parameters: int
    dtype: str


@dataclass(frozen=True)
class _Source:
    cache_file: Path
    key: dict[str, Any]
    signature: Signature
    """Signature right after loading: the disk cache only describes that state."""


_memory: weakref.WeakKeyDictionary[torch.nn.Module, _Hashed] = weakref.WeakKeyDictionary()
_sources: weakref.WeakKeyDictionary[torch.nn.Module, _Source] = weakref.WeakKeyDictionary()


def _signature(model: torch.nn.Module) -> Signature:
    sig = []
    for name, t in sorted(model.state_dict(keep_vars=True).items()):
        sig.append((name, t.data_ptr(), tuple(t.shape), str(t.dtype), t._version))
    return tuple(sig)


def _dtype_name(model: torch.nn.Module) -> str:
    for p in model.parameters():
        if p.is_floating_point():
            return str(p.dtype).removeprefix("torch.")
    return "none"


def _num_parameters(model: torch.nn.Module) -> int:
    # parameters() de-duplicates tied weights, matching how models report their size.
    return sum(p.numel() for p in model.parameters())


def hash_state(state: dict[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, raw bytes) of every tensor in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach()
        header = json.dumps([name, str(t.dtype).removeprefix("torch."), list(t.shape)]).encode()
        h.update(len(header).to_bytes(8, "little"))
        h.update(header)
        flat = t.to("cpu").contiguous().reshape(-1)
        if flat.numel():
            # A uint8 view works for every dtype, bfloat16 included (numpy has none).
            h.update(flat.view(torch.uint8).numpy().data)
    return h.hexdigest()


def _compute(model: torch.nn.Module, signature: Signature) -> _Hashed:
    with torch.no_grad():
        digest = hash_state(model.state_dict())
    return _Hashed(signature, digest, _num_parameters(model), _dtype_name(model))


def _from_disk(model: torch.nn.Module, signature: Signature) -> _Hashed | None:
    src = _sources.get(model)
    if src is None or src.signature != signature:
        return None
    try:
        obj = json.loads(src.cache_file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(obj, dict) or obj.get("key") != src.key:
        return None
    try:
        return _Hashed(signature, str(obj["weights_sha256"]), int(obj["num_parameters"]), str(obj["dtype"]))
    except (KeyError, TypeError, ValueError):
        return None


def _to_disk(model: torch.nn.Module, hashed: _Hashed) -> None:
    src = _sources.get(model)
    if src is None or src.signature != hashed.signature:
        return
    record = {
        "key": src.key,
        "weights_sha256": hashed.weights_sha256,
        "num_parameters": hashed.num_parameters,
        "dtype": hashed.dtype,
    }
    try:
        src.cache_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(src.cache_file, json.dumps(record, indent=1).encode())
    except OSError:
        pass  # a read-only cache only costs a re-hash next time


def _architecture(model: torch.nn.Module) -> tuple[str, str]:
    config = getattr(model, "config", None)
    archs = getattr(config, "architectures", None) or []
    arch = str(archs[0]) if archs else type(model).__name__
    return arch, str(getattr(config, "model_type", None) or "unknown")


def fingerprint(model: torch.nn.Module, name: str) -> BaseFingerprint:
    """The fingerprint of ``model`` (its current weights), recorded under ``name``."""
    signature = _signature(model)
    hashed = _memory.get(model)
    if hashed is None or hashed.signature != signature:
        hashed = _from_disk(model, signature)
        if hashed is None:
            hashed = _compute(model, signature)
            _to_disk(model, hashed)
        _memory[model] = hashed
    arch, model_type = _architecture(model)
    return BaseFingerprint(
        name=name[:512],
        architecture=arch[:256],
        model_type=model_type[:128],
        weights_sha256=hashed.weights_sha256,
        scope="full",
        num_parameters=hashed.num_parameters,
        dtype=hashed.dtype[:32],
    )


def _dir_key(directory: Path, dtype: torch.dtype) -> dict[str, Any]:
    files = []
    for p in sorted(directory.iterdir()):
        if p.suffix in (".safetensors", ".json") and p.is_file():
            st = p.stat()
            files.append([p.name, st.st_size, st.st_mtime_ns])
    import transformers  # the loader's version can change how a checkpoint maps to tensors

    return {"format": _DISK_FORMAT, "dir": str(directory), "dtype": str(dtype), "files": files, "transformers": transformers.__version__}


def remember_source(model: torch.nn.Module, directory: str | os.PathLike[str], dtype: torch.dtype) -> None:
    """Note that ``model`` was just loaded from ``directory`` in ``dtype`` (enables the disk cache)."""
    d = Path(directory).resolve()
    key = _dir_key(d, dtype)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    cache_file = paths.model_cache_dir() / "fingerprints" / f"{digest}.json"
    _sources[model] = _Source(cache_file, key, _signature(model))


def _short(fp: BaseFingerprint) -> str:
    return f"{fp.name!r} ({fp.architecture}, {fp.dtype}, weights sha256 {fp.weights_sha256[:12]})"


def check_compatible(manifest_base: BaseFingerprint, fp: BaseFingerprint, adapter: str = "adapter") -> None:
    """Raise IncompatibleAdapterError unless ``fp`` is the base the adapter was trained on."""
    if manifest_base.architecture != fp.architecture or manifest_base.model_type != fp.model_type:
        raise IncompatibleAdapterError(
            f"{adapter} was trained on {_short(manifest_base)} but this base is {_short(fp)}: different architecture"
        )
    if manifest_base.scope != "full":
        # Only full-state fingerprints are produced by adapterhub; a partial one cannot be
        # compared with a full one, so refuse rather than pretend.
        raise IncompatibleAdapterError(f"{adapter} records a {manifest_base.scope!r} base fingerprint, which cannot be checked against a full one")
    if manifest_base.weights_sha256 != fp.weights_sha256:
        if manifest_base.dtype != fp.dtype:
            raise IncompatibleAdapterError(
                f"{adapter} was trained on {_short(manifest_base)} but this base is loaded as {fp.dtype}: load the base in {manifest_base.dtype}"
            )
        raise IncompatibleAdapterError(
            f"{adapter} was trained on {_short(manifest_base)} but this base is {_short(fp)}: same architecture, different weights"
        )
