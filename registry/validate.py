"""Everything a push checks before the store sees a byte.

* the artifact reads cleanly: manifest (unknown fields, unknown format_version refused),
  every listed file's size and sha256, and every weights file through the strict
  safetensors reader (pickles, LFS pointers, ``.bin`` renamed, truncation: refused);
* no NaN/Inf in any floating tensor;
* the method config parses with the method's own config class (unknown keys refused)
  when that method is installed;
* a shape-only check of the tensors against the config for the built-in method kinds
  that allow one without the base (LoRA ranks, prefix token counts). Checks that need
  the base model (fingerprint, module shapes) run when the adapter is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from adapterhub.errors import ConfigError, IncompatibleAdapterError, UnknownNameError
from adapterhub.manifest import MANIFEST_NAME, Manifest


def check_artifact(directory: Path) -> Manifest:
    """Validate an adapter directory for publishing; return its manifest."""
    return read_checked(directory)[0]


def read_checked(directory: Path) -> tuple[Manifest, dict[str, memoryview]]:
    """:func:`check_artifact`, also handing back the verified bytes of the weights files.

    The same reader as ``read_adapter(directory, verify=True)``
    (:func:`adapterhub.artifact.read_adapter_bytes`: regular files only, sizes, sha256 of
    the very bytes that are parsed), which also keeps the bytes of each ``*.safetensors``
    file, so a push uploads the bytes that were hashed and validated instead of reading
    and hashing the file again.
    """
    from adapterhub.artifact import read_adapter_bytes
    from adapterhub.safeio import check_finite

    manifest, tensors, data = read_adapter_bytes(directory, verify=True)
    check_finite(tensors, str(directory))
    config = _parse_config(manifest, directory)
    check_shapes(manifest.method, config, tensors, str(directory))
    return manifest, data


def _parse_config(manifest: Manifest, directory: Path) -> Any:
    from adapterhub.catalog import get_catalog

    try:
        method = get_catalog().method(manifest.method)
    except UnknownNameError:
        return dict(manifest.method_config)  # not installed here: stored as-is
    try:
        return method.config_cls.model_validate(manifest.method_config)
    except ValueError as exc:
        errors = getattr(exc, "errors", None)
        if callable(errors):
            first = errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "<root>"
            raise ConfigError(
                f"{directory / MANIFEST_NAME}: method_config of {manifest.method!r} is invalid at {where}: {first['msg']}"
            ) from None
        raise ConfigError(f"{directory / MANIFEST_NAME}: method_config of {manifest.method!r} is invalid: {exc}") from None


def check_shapes(method: str, config: Any, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Model-free consistency of tensors with the config (IncompatibleAdapterError)."""
    if not tensors:
        raise IncompatibleAdapterError(f"{source}: the adapter holds no tensors")
    if method == "lora":
        _check_lora(config, tensors, source)
    elif method == "prefix-tuning":
        _check_prefix(config, tensors, source)


def _cfg(config: Any, key: str) -> Any:
    return config.get(key) if isinstance(config, dict) else getattr(config, key, None)


def _check_lora(config: Any, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    r = _cfg(config, "r")
    modules: set[str] = set()
    for key in tensors:
        if key.endswith(".lora_A") or key.endswith(".lora_B"):
            modules.add(key[:-7])
        else:
            raise IncompatibleAdapterError(f"{source}: unexpected tensor {key!r} in a LoRA adapter (expected <module>.lora_A/.lora_B)")
    for mod in sorted(modules):
        a, b = tensors.get(f"{mod}.lora_A"), tensors.get(f"{mod}.lora_B")
        if a is None or b is None:
            missing = f"{mod}.lora_A" if a is None else f"{mod}.lora_B"
            raise IncompatibleAdapterError(f"{source}: missing tensor {missing!r} (LoRA tensors come in A/B pairs)")
        if a.dim() != 2 or b.dim() != 2:
            raise IncompatibleAdapterError(f"{source}: {mod} LoRA tensors must be 2-d, got {list(a.shape)} and {list(b.shape)}")
        if r is not None and (a.shape[0] != r or b.shape[1] != r):
            raise IncompatibleAdapterError(
                f"{source}: config rank r={r} disagrees with {mod}.lora_A {list(a.shape)} / lora_B {list(b.shape)}"
            )
        if a.shape[0] != b.shape[1]:
            raise IncompatibleAdapterError(f"{source}: {mod}.lora_A {list(a.shape)} and lora_B {list(b.shape)} have different ranks")


def _check_prefix(config: Any, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    extra = sorted(set(tensors) - {"prefix.key", "prefix.value"})
    if extra:
        raise IncompatibleAdapterError(f"{source}: unexpected tensor {extra[0]!r} in a prefix-tuning adapter")
    for key in ("prefix.key", "prefix.value"):
        if key not in tensors:
            raise IncompatibleAdapterError(f"{source}: missing tensor {key!r}")
    k, v = tensors["prefix.key"], tensors["prefix.value"]
    if k.dim() != 4 or k.shape != v.shape:
        raise IncompatibleAdapterError(f"{source}: prefix.key {list(k.shape)} and prefix.value {list(v.shape)} must share one 4-d shape")
    n = _cfg(config, "num_virtual_tokens")
    if n is not None and k.shape[2] != n:
        raise IncompatibleAdapterError(f"{source}: config num_virtual_tokens={n} disagrees with prefix shape {list(k.shape)}")
