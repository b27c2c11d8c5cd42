"""Resumable training checkpoints: safetensors for tensors, JSON for everything else.

Layout (under ``OUT/checkpoints/step-000050/``)::

    trainable.safetensors   the trainable parameters, keyed "param.<i>" in the order of
                            adapter.trainable_parameters() (raw training parameters, e.g.
                            a prefix encoder before folding: exactly what resuming needs)
    optimizer.safetensors   AdamW moments "state.<i>.exp_avg" / ".exp_avg_sq" (+ any
                            other tensor state), and the torch RNG state "rng.torch"
    state.json              step, per-parameter scalar state (Adam "step"), scheduler
                            position, loss curve, eval history, Python/NumPy RNG state,
                            and the run key that a resume must match

Nothing is ever pickled or ``torch.load``-ed: optimizer state is split into tensors
(safetensors) and scalars (JSON) and put back together on resume. A checkpoint directory
is written under a temporary name and renamed into place, so a crash mid-write leaves
the previous checkpoint as the latest complete one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adapterhub.errors import ConfigError, TrainingError
from adapterhub.safeio import atomic_write_bytes, fsync_dir, load_safetensors, save_safetensors

CHECKPOINTS = "checkpoints"
STATE = "state.json"
TRAINABLE = "trainable.safetensors"
OPTIMIZER = "optimizer.safetensors"
FORMAT = 1


@dataclass
class Checkpoint:
    path: Path
    step: int
    state: dict[str, Any]


def checkpoint_root(out_dir: Path) -> Path:
    return out_dir / CHECKPOINTS


def latest(out_dir: Path) -> Checkpoint | None:
    """The newest complete checkpoint under ``out_dir`` (staging leftovers are ignored)."""
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return None
    found: list[tuple[int, Path]] = []
    for child in root.iterdir():
        if child.name.startswith("step-") and (child / STATE).is_file():
            try:
                found.append((int(child.name[5:]), child))
            except ValueError:
                continue
    if not found:
        return None
    step, path = max(found)
    try:
        state = json.loads((path / STATE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainingError(f"{path / STATE}: unreadable checkpoint state ({exc})") from None
    if state.get("format") != FORMAT:
        raise TrainingError(f"{path / STATE}: unknown checkpoint format {state.get('format')!r}")
    return Checkpoint(path, step, state)


def _rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    py = random.getstate()
    np_state: Any = np.random.get_state()
    scalars: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return scalars, {"rng.torch": torch.get_rng_state()}


def _set_rng_state(scalars: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    py = scalars["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = scalars["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    # A clone: loaded tensors are views into the file's buffer, and set_rng_state reads
    # from the start of the storage, ignoring the view's offset.
    torch.set_rng_state(tensors["rng.torch"].clone())


def save(
    out_dir: Path,
    step: int,
    params: Sequence[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    extra: dict[str, Any],
    keep: int = 1,
) -> Path:
    """Write checkpoint ``step`` atomically and prune all but the newest ``keep``."""
    root = checkpoint_root(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    stage = root / f".step-{step:06d}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    stage.mkdir()
    try:
        trainable = {f"param.{i}": p.detach().to("cpu", copy=True).contiguous() for i, p in enumerate(params)}
        save_safetensors(trainable, stage / TRAINABLE)
        opt_tensors: dict[str, torch.Tensor] = {}
        opt_scalars: dict[str, dict[str, Any]] = {}
        index = {id(p): i for i, p in enumerate(params)}
        for p, st in optimizer.state.items():
            i = index[id(p)]
            for key, value in st.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    opt_tensors[f"state.{i}.{key}"] = value.detach().to("cpu", copy=True).contiguous()
                else:  # Adam's "step" is a 0-d tensor: a scalar, so JSON
                    v = value.item() if isinstance(value, torch.Tensor) else value
                    opt_scalars.setdefault(str(i), {})[key] = v
        rng_scalars, rng_tensors = _rng_state()
        opt_tensors.update(rng_tensors)
        save_safetensors(opt_tensors, stage / OPTIMIZER)
        state = {"format": FORMAT, "step": step, "optimizer_scalars": opt_scalars, "rng": rng_scalars, **extra}
        atomic_write_bytes(stage / STATE, json.dumps(state, indent=1).encode())
        if final.exists():
            shutil.rmtree(final)
        os.rename(stage, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    steps = sorted(p for p in root.iterdir() if p.name.startswith("step-"))
    for old in steps[: -max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def check_run_key(ckpt: Checkpoint, run_key: dict[str, Any]) -> None:
    """A resume must continue the *same* run: same method, config, data and schedule."""
    saved = ckpt.state.get("run_key", {})
    for key in sorted(set(saved) | set(run_key)):
        if saved.get(key) != run_key.get(key):
            raise ConfigError(
                f"cannot resume from {ckpt.path}: {key} was {saved.get(key)!r}, now {run_key.get(key)!r} "
                f"(resume with the same settings, or train into a new --out)"
            )


def restore(ckpt: Checkpoint, params: Sequence[torch.nn.Parameter], optimizer: torch.optim.Optimizer) -> None:
    """Load parameters, optimizer moments and RNG state saved by :func:`save`."""
    trainable = load_safetensors(ckpt.path / TRAINABLE)
    if len(trainable) != len(params):
        raise TrainingError(f"{ckpt.path}: checkpoint has {len(trainable)} trainable tensors, the adapter has {len(params)}")
    with torch.no_grad():
        for i, p in enumerate(params):
            t = trainable[f"param.{i}"]
            if tuple(t.shape) != tuple(p.shape):
                raise TrainingError(f"{ckpt.path}: param.{i} has shape {tuple(t.shape)}, the adapter expects {tuple(p.shape)}")
            p.copy_(t.to(p.dtype))
    tensors = load_safetensors(ckpt.path / OPTIMIZER)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, scalars in ckpt.state.get("optimizer_scalars", {}).items():
        for name, scalar in scalars.items():
            # torch's Adam keeps "step" as a float32 0-d tensor (capturable-safe).
            state.setdefault(int(index), {})[name] = torch.tensor(float(scalar), dtype=torch.float32) if name == "step" else scalar
    sd = optimizer.state_dict()
    sd["state"] = state
    optimizer.load_state_dict(sd)
    _set_rng_state(ckpt.state["rng"], tensors)


def remove_all(out_dir: Path) -> None:
    shutil.rmtree(checkpoint_root(out_dir), ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())
