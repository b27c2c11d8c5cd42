"""What a trained adapter's manifest says about how it was made."""

from __future__ import annotations

import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from adapterhub.manifest import BaseFingerprint
from adapterhub.protocols.method import Method, MethodConfig
from adapterhub.trainer.config import TrainConfig
from adapterhub.trainer.data import TrainingData

_PACKAGES = ("adapterhub", "torch", "transformers", "safetensors", "tokenizers", "peft")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def adapter_name(out_dir: Path, task: str | None, method: str) -> str:
    """A registry-valid name from the output directory (or ``<task>-<method>``)."""
    raw = out_dir.resolve().name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", raw)
    name = re.sub(r"([.-])[.-]+", r"\1", name).lstrip("._-").rstrip(".-")[:96].rstrip(".-")
    return name or f"{task or 'adapter'}-{method}"


def curve_ends(curve: list[float]) -> tuple[float, float]:
    """(initial, final) loss: means over the first / last k steps, k = steps/10 in [1, 10].

    A single step's loss swings with its batch; a short mean at each end is what a
    reader comparing runs actually wants.
    """
    if not curve:
        return float("nan"), float("nan")
    k = max(1, min(10, len(curve) // 10))
    return sum(curve[:k]) / k, sum(curve[-k:]) / k


def build_manifest_fields(
    *,
    name: str,
    method: Method,
    method_config: MethodConfig,
    base_fp: BaseFingerprint,
    n_trainable: int,
    data: TrainingData,
    num_examples: int,
    cfg: TrainConfig,
    steps: int,
    seconds: float,
    curve: list[float],
    eval_losses: list[tuple[int, float]],
    stopped_early: bool,
    world_size: int,
    lr_source: str = "given",
    mix: list[dict[str, Any]] | None = None,
    summary: dict[str, float] | None = None,
) -> dict[str, Any]:
    hyper = {
        **cfg.hyperparameters(),
        "lr_source": lr_source,
        "data_source": data.source,
        "world_size": world_size,
        "stopped_early": stopped_early,
        "skipped_rows": data.skipped,
    }
    # The mixture as run: sources, fractions, data hashes, rows drawn, token share
    # (replaces the bare (name, fraction) pairs of the options).
    if mix:
        hyper["mix"] = mix
    if eval_losses:
        hyper["eval_losses"] = [[s, round(v, 6)] for s, v in eval_losses]
    initial, final = curve_ends(curve)
    metrics: dict[str, dict[str, float]] = {"training": {"initial_loss": round(initial, 6), "final_loss": round(final, 6)}}
    for key, value in (summary or {}).items():
        metrics["training"][key] = round(float(value), 6)
    if eval_losses:
        metrics["training"]["best_eval_loss"] = round(min(v for _, v in eval_losses), 6)
    return {
        "name": name,
        "task": data.task,
        "method": method.name,
        "method_kind": method.kind,
        "method_config": method_config.model_dump(mode="json"),
        "base": base_fp,
        "trainable_parameters": n_trainable,
        "metrics": metrics,
        "description": cfg.description,
        "provenance": {
            "task": data.task,
            "data_sha256": data.sha256,
            "split_seed": data.split_seed,
            "num_examples": num_examples,
            "steps": steps,
            "seed": cfg.seed,
            "seconds": round(seconds, 3),
            "hyperparameters": hyper,
            "library_versions": library_versions(),
            "loss_curve": [round(x, 6) for x in curve],
        },
    }
