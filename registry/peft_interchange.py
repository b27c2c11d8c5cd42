"""PEFT directory interchange: ``export-peft`` and ``import-peft``.

A PEFT directory is ``adapter_config.json`` + ``adapter_model.safetensors`` — what
``peft.PeftModel.from_pretrained`` loads and what vLLM and LoRAX read. The mapping
(fixed by the LoRA and prefix-tuning plugins' parity tests against peft):

* LoRA: ``<path>.lora_A`` (r, in) ↔ ``base_model.model.<path>.lora_A.weight``, same for
  ``lora_B``; ``alpha`` ↔ ``lora_alpha`` (scale ``alpha / r`` on both sides; peft's
  ``use_rslora`` scale ``alpha/√r`` is imported as ``alpha·√r``). ``target_modules`` is
  exported as the config's own suffix names when peft selects exactly the same modules
  with them (vLLM expects those), else as the exact module paths.
* Prefix tuning: ``prefix.key``/``prefix.value`` (L, Hkv, T, D) ↔ peft's folded
  ``prompt_embeddings`` (T, L·2·Hkv·D) with ``prefix_projection=false``.

Import is strict where peft only warns: the modules the peft config targets on the base
must be exactly the modules that have weights (missing or unexpected keys are an error),
features adapterhub does not model (DoRA, bias training, ``modules_to_save``, per-module
rank/alpha patterns, ``fan_in_fan_out``) are refused, and by default the imported adapter
must reproduce peft's own logits on the base (max abs diff ≤ 1e-4 in fp32) before it is
pushed. Only safetensors is read.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any

import torch

from adapterhub.errors import (
    ArtifactError,
    ConfigError,
    IncompatibleAdapterError,
    UnsafeFileError,
)
from adapterhub.manifest import Manifest

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^base_model\.model\.(?P<path>.+)\.lora_(?P<ab>[AB])\.weight$")
LOGITS_TOLERANCE = 1e-4
_GLOB = frozenset("*?[")


# --- export ----------------------------------------------------------------------------------------


def _peft_targets(manifest: Manifest, config: Any, paths: list[str]) -> list[str] | str:
    """The config's own suffix names when peft would select exactly ``paths`` with them."""
    from adapterhub.plugins.lora.config import ALL_LINEAR, DEFAULT_TARGETS

    if config.layers is None:
        targets = config.target_modules
        if targets is None:
            targets = DEFAULT_TARGETS.get(manifest.base.model_type)
        if targets == ALL_LINEAR:
            return ALL_LINEAR
        if isinstance(targets, tuple) and not any(_GLOB & set(t) for t in targets):
            return sorted(targets)
    return sorted(paths)


def export_peft(adapter_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], base_model_name_or_path: str | None = None) -> Path:
    """Write ``out_dir`` as a PEFT adapter directory; returns it."""
    from adapterhub.artifact import read_adapter
    from adapterhub.safeio import atomic_write_bytes, save_safetensors

    manifest, tensors = read_adapter(adapter_dir)
    base_path = base_model_name_or_path or manifest.base.name
    if manifest.method == "lora":
        from adapterhub.plugins.lora.validation import coerce_config

        cfg = coerce_config(manifest.method_config)
        paths = sorted({k.rsplit(".", 1)[0] for k in tensors})
        weights = {}
        for key, t in tensors.items():
            path, which = key.rsplit(".", 1)
            if which not in ("lora_A", "lora_B"):
                raise ArtifactError(f"{adapter_dir}: unexpected LoRA tensor {key!r}")
            weights[f"{_PEFT_PREFIX}{path}.{which}.weight"] = t.contiguous()
        config: dict[str, Any] = {
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_path,
            "r": cfg.r, "lora_alpha": cfg.alpha, "lora_dropout": cfg.dropout,
            "target_modules": _peft_targets(manifest, cfg, paths), "bias": "none", "fan_in_fan_out": False,
            "use_rslora": False, "use_dora": False, "modules_to_save": None, "layers_to_transform": None,
            "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {}, "init_lora_weights": True,
            "inference_mode": True,
        }
    elif manifest.method == "prefix-tuning":
        from adapterhub.plugins.prefix_tuning.layout import to_peft_prompt_embeddings

        if set(tensors) != {"prefix.key", "prefix.value"}:
            raise ArtifactError(f"{adapter_dir}: a prefix-tuning adapter holds exactly prefix.key and prefix.value")
        pk, pv = tensors["prefix.key"], tensors["prefix.value"]
        layers, kv_heads, tokens, head_dim = pk.shape
        weights = {"prompt_embeddings": to_peft_prompt_embeddings(pk, pv)}
        config = {
            "peft_type": "PREFIX_TUNING", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_path,
            "num_virtual_tokens": tokens, "num_layers": layers, "token_dim": kv_heads * head_dim,
            "num_attention_heads": kv_heads, "encoder_hidden_size": kv_heads * head_dim,
            "num_transformer_submodules": 1, "prefix_projection": False, "inference_mode": True,
        }
    else:
        raise ConfigError(f"export-peft supports lora and prefix-tuning adapters, not {manifest.method!r}")

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ArtifactError(f"{out}: exists and is not empty")
    stage = out.parent / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.staging"
    stage.mkdir(parents=True)
    try:
        save_safetensors(weights, stage / PEFT_WEIGHTS, metadata={"format": "pt"})
        atomic_write_bytes(stage / PEFT_CONFIG, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
        if out.is_dir():
            out.rmdir()
        os.rename(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out


# --- import ----------------------------------------------------------------------------------------


def read_peft_dir(peft_dir: Path) -> tuple[Any, dict[str, torch.Tensor]]:
    """(peft config object, tensors) — parsed by peft itself, weights via safeio only."""
    from peft import PeftConfig

    from adapterhub.safeio import load_safetensors

    cfg_path = peft_dir / PEFT_CONFIG
    if not cfg_path.is_file():
        raise ArtifactError(f"{peft_dir}: no {PEFT_CONFIG} (is this a PEFT adapter directory?)")
    weights = peft_dir / PEFT_WEIGHTS
    if not weights.is_file():
        other = [p.name for p in peft_dir.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        hint = f" (found {other[0]}: pickle-based weights are never loaded; re-save with safe_serialization=True)" if other else ""
        raise UnsafeFileError(f"{peft_dir}: no {PEFT_WEIGHTS}{hint}")
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{cfg_path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or "peft_type" not in raw:
        raise ArtifactError(f"{cfg_path}: not a peft adapter config (no peft_type)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            config = PeftConfig.from_pretrained(str(peft_dir))
        except (TypeError, ValueError, KeyError) as exc:
            raise ArtifactError(f"{cfg_path}: peft cannot parse it ({type(exc).__name__}: {exc})") from None
    return config, load_safetensors(weights)


def _lora_from_peft(config: Any, tensors: dict[str, torch.Tensor], model: torch.nn.Module, source: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from peft.tuners.tuners_utils import check_target_module_exists

    refuse = {
        "use_dora": bool(getattr(config, "use_dora", False)),
        "bias != 'none'": getattr(config, "bias", "none") != "none",
        "modules_to_save": bool(getattr(config, "modules_to_save", None)),
        "rank_pattern": bool(getattr(config, "rank_pattern", None)),
        "alpha_pattern": bool(getattr(config, "alpha_pattern", None)),
        "fan_in_fan_out": bool(getattr(config, "fan_in_fan_out", False)),
        "target_parameters": bool(getattr(config, "target_parameters", None)),
        "trainable_token_indices": bool(getattr(config, "trainable_token_indices", None)),
    }
    bad = [k for k, v in refuse.items() if v]
    if bad:
        raise ConfigError(f"{source}: peft LoRA feature(s) {', '.join(bad)} are not supported by adapterhub's lora method")
    ours: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        m = _LORA_KEY.match(key)
        if m is None:
            raise IncompatibleAdapterError(f"{source}: unexpected key {key!r} (expected base_model.model.<module>.lora_A/B.weight)")
        ours[f"{m['path']}.lora_{m['ab']}"] = t
    have = {k.rsplit(".", 1)[0] for k in ours}
    get_out = getattr(model, "get_output_embeddings", None)
    out_emb = get_out() if callable(get_out) else None
    linears = [(n, mod) for n, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)]
    if config.target_modules == "all-linear":
        targeted = {n for n, mod in linears if mod is not out_emb and n != "lm_head"}
    else:
        targeted = {n for n, _ in linears if check_target_module_exists(config, n)}
    missing, unexpected = sorted(targeted - have), sorted(have - targeted)
    if missing:
        raise IncompatibleAdapterError(f"{source}: missing LoRA weights for {len(missing)} targeted module(s), e.g. {missing[0]!r}")
    if unexpected:
        raise IncompatibleAdapterError(f"{source}: unexpected LoRA weights for {len(unexpected)} module(s) the config does not target, e.g. {unexpected[0]!r}")
    for path in sorted(have):
        if f"{path}.lora_A" not in ours or f"{path}.lora_B" not in ours:
            raise IncompatibleAdapterError(f"{source}: {path} has only one of lora_A/lora_B")
    r = int(config.r)
    alpha = float(config.lora_alpha) * (math.sqrt(r) if getattr(config, "use_rslora", False) else 1.0)
    method_config = {"r": r, "alpha": alpha, "dropout": float(config.lora_dropout), "target_modules": sorted(have)}
    return method_config, ours


def _prefix_from_peft(config: Any, tensors: dict[str, torch.Tensor], model: torch.nn.Module, source: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from adapterhub.plugins.prefix_tuning.layout import from_peft_prompt_embeddings, geometry_of

    extra = sorted(set(tensors) - {"prompt_embeddings"})
    if extra:
        raise IncompatibleAdapterError(f"{source}: unexpected key {extra[0]!r} (a peft prefix-tuning adapter holds prompt_embeddings)")
    if "prompt_embeddings" not in tensors:
        raise IncompatibleAdapterError(f"{source}: missing key 'prompt_embeddings'")
    if int(getattr(config, "num_transformer_submodules", 1) or 1) != 1:
        raise ConfigError(f"{source}: encoder-decoder prefix tuning is not supported")
    emb = tensors["prompt_embeddings"]
    if emb.dim() != 2 or emb.shape[0] != int(config.num_virtual_tokens):
        raise IncompatibleAdapterError(f"{source}: prompt_embeddings has shape {list(emb.shape)}, expected [{config.num_virtual_tokens}, ...]")
    return {"num_virtual_tokens": int(config.num_virtual_tokens)}, from_peft_prompt_embeddings(emb, geometry_of(model))


def _probe_logits(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1234)
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 256) or 256)
    ids = torch.randint(0, min(vocab, 1000), (2, 12), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def logits_gap(peft_dir: Path, model: torch.nn.Module, method: Any, method_config: Any, tensors: dict[str, torch.Tensor]) -> float:
    """max |peft logits - adapterhub logits| for one probe batch on copies of ``model``."""
    from peft import PeftModel

    probe = _probe_logits(model)
    with warnings.catch_warnings(), tempfile.TemporaryDirectory(prefix="adapterhub-peft-") as private:
        warnings.simplefilter("ignore")
        # peft re-reads the directory and falls back to torch.load on adapter_model.bin:
        # give it a private copy holding only the config and the safetensors weights.
        for fname in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copyfile(Path(peft_dir) / fname, Path(private) / fname)
        pm = PeftModel.from_pretrained(copy.deepcopy(model), private).eval()  # no-pickle: private dir holds only adapter_model.safetensors
        ours = copy.deepcopy(model).eval()
        method.load(ours, method_config, tensors)
        with torch.no_grad():
            a = pm(**probe).logits.float()
            b = ours(**probe).logits.float()
    return float((a - b).abs().max())


def import_peft(
    peft_dir: str | os.PathLike[str],
    name: str,
    base: Any = None,
    version: str | None = None,
    tag: str | None = None,
    to: str | None = None,
    registry: Any = None,
    verify_logits: bool = True,
) -> str:
    """Convert a PEFT LoRA / prefix-tuning directory and push it; returns ``name@version``.

    ``base`` is a base spec (alias, directory, HF id), ``None`` (the config's
    ``base_model_name_or_path``), or a loaded
    :class:`~adapterhub.protocols.LoadedBase`: the fingerprint is taken from it, and the
    weights are checked against it (and against peft's logits with ``verify_logits``).
    """
    from adapterhub.registry.client import Registry
    from adapterhub.registry.names import validate_name

    from adapterhub.artifact import write_adapter
    from adapterhub.catalog import get_catalog
    from adapterhub.fingerprint import fingerprint

    validate_name(name)
    src = Path(peft_dir)
    config, raw = read_peft_dir(src)
    if base is None:
        # peft records the base it trained on; `--base` only overrides it.
        base = getattr(config, "base_model_name_or_path", None) or None
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(f"{src}: adapter_config.json names no base_model_name_or_path; give the base with --base")
    if isinstance(base, str):
        from adapterhub.basemodels import load_base

        base = load_base(base)
    model = base.model
    peft_type = str(getattr(config.peft_type, "value", config.peft_type))
    if peft_type == "LORA":
        method_name, kind = "lora", "reparameterization"
        method_config, tensors = _lora_from_peft(config, raw, model, str(src))
    elif peft_type == "PREFIX_TUNING":
        method_name, kind = "prefix-tuning", "additive"
        method_config, tensors = _prefix_from_peft(config, raw, model, str(src))
    else:
        raise ConfigError(f"{src}: peft_type {peft_type} is not supported (LORA and PREFIX_TUNING are)")
    method = get_catalog().method(method_name)
    cfg = method.config_cls.model_validate(method_config)
    method.validate(model, cfg, tensors)
    if verify_logits:
        gap = logits_gap(src, model, method, cfg, tensors)
        if not gap <= LOGITS_TOLERANCE:
            raise IncompatibleAdapterError(f"{src}: imported adapter differs from peft's logits by {gap:.2e} (> {LOGITS_TOLERANCE:g})")
    import peft as _peft

    fields = {
        "name": name, "method": method_name, "method_kind": kind, "method_config": cfg.model_dump(mode="json"),
        "base": fingerprint(model, base.name), "trainable_parameters": sum(t.numel() for t in tensors.values()),
        "description": f"Imported from a peft {peft_type} adapter ({src.name}).",
        "provenance": {"hyperparameters": {"imported_from": "peft", "peft_type": peft_type}, "library_versions": {"peft": _peft.__version__}},
    }
    reg = registry if registry is not None else Registry()
    with tempfile.TemporaryDirectory(prefix="adapterhub-import-") as tmp:
        out = Path(tmp) / "adapter"
        write_adapter(out, fields, tensors)
        return str(reg.push(out, name, version=version, tag=tag, to=to))
