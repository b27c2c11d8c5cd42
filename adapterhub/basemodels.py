"""Resolve ``--base SPEC`` and load the frozen base model.

``load_base(spec, dtype=torch.float32, device="cpu") -> LoadedBase`` tries, in order:

1. a registered alias (``smollm2-135m-instruct``, ``tiny-random-llama``, or any alias a
   plugin registers through ``adapterhub_register_base_models``): the source
   materialises a local safetensors directory (``local_dir()``), which is then loaded;
2. a local model directory (must hold ``config.json``);
3. the firstresult hook ``adapterhub_resolve_base_model(spec)``, so plugins can claim
   whole families of ids before any network lookup;
4. a Hugging Face model id (``org/name``), which works online or from the local HF cache;
   offline and not cached is one :class:`~adapterhub.errors.BaseModelError` line.

Only safetensors weights are ever loaded (``use_safetensors=True``): a model that only
ships pickle ``.bin`` files is refused, never unpickled. The tokenizer always has a pad
token (falling back to EOS) and pads on the left, as batched generation needs.

:func:`materialize_dir` is the atomic "build a directory once into the cache" helper that
the built-in sources use and third-party sources may reuse.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapterhub.errors import AdapterhubError, BaseModelError, UnknownNameError
from adapterhub.protocols.basemodel import BaseModelSource, LoadedBase

if TYPE_CHECKING:  # torch loads with the model, not with this module (`adapterhub models`)
    import torch

MARKER = "adapterhub-model.json"
"""Written last into a materialised directory; its presence means the build completed."""

_HF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")


# --- alias lookup ------------------------------------------------------------------------
def _catalog_source(spec: str) -> BaseModelSource | None:
    try:
        from adapterhub.catalog import get_catalog
    except ImportError:
        return _builtin_source(spec)
    try:
        return get_catalog().base_model(spec)
    except UnknownNameError:
        return None


def _builtin_source(spec: str) -> BaseModelSource | None:
    """Fallback when no catalog is available: the built-in models plugin directly."""
    from adapterhub.plugins import models

    found: dict[str, BaseModelSource] = {}
    models.adapterhub_register_base_models(register=lambda src: found.setdefault(src.name, src))
    return found.get(spec)


def _hook_source(spec: str) -> BaseModelSource | None:
    try:
        from adapterhub.catalog import get_catalog
    except ImportError:
        return None
    return get_catalog().resolve_base_model(spec)


def resolve(spec: str) -> tuple[str, BaseModelSource | None]:
    """``(kind, source)``: kind is ``alias``, ``dir``, ``plugin`` or ``hub``."""
    if not spec or "\x00" in spec:
        raise BaseModelError(f"invalid base model spec {spec!r}")
    source = _catalog_source(spec)
    if source is not None:
        return "alias", source
    if Path(spec).expanduser().is_dir():
        return "dir", None
    source = _hook_source(spec)
    if source is not None:
        return "plugin", source
    if _HF_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return "hub", None
    raise BaseModelError(f"base model {spec!r} is not a registered alias, a local model directory or a Hugging Face model id (see `adapterhub models`)")


# --- loading -------------------------------------------------------------------------------
def _prepare_tokenizer(tokenizer: Any) -> Any:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise BaseModelError("tokenizer has neither a pad nor an EOS token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # batched generation continues from the right edge
    return tokenizer


def _load_pretrained(location: str, dtype: torch.dtype, device: str | torch.device, offline_hint: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model: Any = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, use_safetensors=True)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise BaseModelError(f"cannot load base model {location!r}{offline_hint}: {first[:300]}") from None
    model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)  # the base is frozen; methods enable their own parameters
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return model, tokenizer


def _load_dir(name: str, directory: Path, dtype: torch.dtype, device: str | torch.device) -> LoadedBase:
    if not (directory / "config.json").is_file():
        raise BaseModelError(f"{directory}: not a model directory (no config.json)")
    model, tokenizer = _load_pretrained(str(directory), dtype, device, "")
    tokenizer = _prepare_tokenizer(tokenizer)
    from adapterhub.fingerprint import remember_source

    # Enables the on-disk fingerprint cache: re-hashing 135M weights on every load is waste.
    remember_source(model, directory, dtype)
    return LoadedBase(name=name, model=model, tokenizer=tokenizer, path=str(directory))


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _load_hub(spec: str, dtype: torch.dtype, device: str | torch.device) -> LoadedBase:
    from huggingface_hub import snapshot_download

    try:
        # Resolve to the cached snapshot first so a later load never touches the network
        # and the fingerprint disk cache can key on real files.
        local = snapshot_download(spec, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
    except Exception as exc:  # network, auth, not found, offline-and-not-cached
        hint = " (offline: HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache)" if _hf_offline() else ""
        raise BaseModelError(f"cannot fetch base model {spec!r} from the Hugging Face Hub{hint}: {exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
    return _load_dir(spec, Path(local), dtype, device)


def load_base(spec: str, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> LoadedBase:
    """Load a base model by alias, directory, plugin-resolved id or Hugging Face id.

    ``dtype`` defaults to ``torch.float32``.
    """
    if dtype is None:
        import torch

        dtype = torch.float32
    kind, source = resolve(spec)
    if source is not None:
        try:
            directory = Path(source.local_dir())
        except AdapterhubError:
            raise
        except OSError as exc:
            raise BaseModelError(f"base model {spec!r}: cannot materialise its files ({exc})") from None
        return _load_dir(spec, directory, dtype, device)
    if kind == "dir":
        return _load_dir(spec, Path(spec).expanduser().resolve(), dtype, device)
    return _load_hub(spec, dtype, device)


def list_sources() -> dict[str, BaseModelSource]:
    """Every registered alias."""
    try:
        from adapterhub.catalog import get_catalog
    except ImportError:
        from adapterhub.plugins import models

        found: dict[str, BaseModelSource] = {}
        models.adapterhub_register_base_models(register=lambda src: found.setdefault(src.name, src))
        return found
    return dict(get_catalog().base_models)


# --- materialising directories atomically ----------------------------------------------------------
@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """An advisory lock so concurrent processes do not all do the same slow build.

    Correctness never depends on it: every builder writes its own temp dir and renames.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def read_marker(directory: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _fsync_tree(directory: Path) -> None:
    from adapterhub.safeio import fsync_dir

    for p in directory.iterdir():
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(directory)


def materialize_dir(final: Path, build: Callable[[Path], None], key: dict[str, Any]) -> Path:
    """Return ``final``, building it with ``build(tmp_dir)`` unless an up-to-date copy exists.

    ``key`` identifies what was built (source file, version); a directory whose marker
    records a different key is rebuilt. The build goes into a process-unique temp dir
    next to ``final``, gets the marker written last, and is renamed into place, so a
    crash or a concurrent builder never leaves a half-written model behind.
    """
    final = Path(final)
    marker = read_marker(final)
    if marker is not None and marker.get("key") == key:
        return final
    from adapterhub.safeio import atomic_write_bytes, fsync_dir

    with _build_lock(final.parent / f".{final.name}.lock"):
        marker = read_marker(final)
        if marker is not None and marker.get("key") == key:
            return final  # another process finished it while we waited
        tmp = final.parent / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.building"
        tmp.mkdir(parents=True)
        try:
            build(tmp)
            atomic_write_bytes(tmp / MARKER, json.dumps({"key": key}, indent=1).encode())
            _fsync_tree(tmp)
            if final.exists():
                # Stale or incomplete: move it aside first (rename onto a non-empty
                # directory is impossible), then put the new one in place.
                trash = final.parent / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.old"
                os.rename(final, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(final.parent)
    return final


__all__ = ["MARKER", "list_sources", "load_base", "materialize_dir", "read_marker", "resolve"]
