from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adapterhub.artifact import read_adapter
from adapterhub.errors import TrainingError
from adapterhub.protocols.basemodel import LoadedBase
from adapterhub.protocols.task import Example
from adapterhub.testing.models import tiny_llama
from adapterhub.trainer.distributed import DistContext, from_environment, shard
from adapterhub.trainer.loop import train

WORDS = ["zero", "one", "two", "three"]
ROWS = [{"prompt": f"Say the word for {i % 4}", "completion": WORDS[i % 4]} for i in range(32)]
ARGS = ["--base", "tiny-random-llama", "--method", "lora", "--set", "r=4", "--set", "target_modules=all-linear",
        "--steps", "8", "--batch-size", "4", "--lr", "1e-2", "--no-progress", "--json"]


def test_single_process_context_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = from_environment(device="cpu")
    assert not ctx.enabled and ctx.is_main and ctx.world_size == 1
    assert ctx.all_reduce_sum([1.5, 2]) == [1.5, 2.0] and ctx.any(True) and not ctx.any(False)
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    ctx.average_gradients([p])
    assert torch.equal(p.grad, torch.full((3,), 2.0))


def test_world_size_without_torchrun_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(TrainingError, match="torchrun"):
        from_environment(device="cpu")


def test_shard_is_strided_and_refuses_empty_ranks() -> None:
    assert shard(list(range(7)), DistContext(rank=1, world_size=3)) == [1, 4]
    with pytest.raises(TrainingError, match="rank 2 got no training examples"):
        shard([0, 1], DistContext(rank=2, world_size=3))


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu_match_the_single_process_run(tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "adapterhub.trainer.cli",
         *ARGS, "--data", str(data), "--out", str(tmp_path / "ddp")],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # rank 0 alone prints (and writes)
    ddp_manifest, ddp_tensors = read_adapter(tmp_path / "ddp")
    assert ddp_manifest.provenance.hyperparameters["world_size"] == 2

    model, tok = tiny_llama()
    single = train(LoadedBase("tiny-random-llama", model, tok), "lora", {"r": 4, "target_modules": "all-linear"},
                   [Example(r["prompt"], r["completion"]) for r in ROWS], out_dir=tmp_path / "single",
                   steps=8, batch_size=4, lr=1e-2, progress=False)
    single_manifest, single_tensors = read_adapter(tmp_path / "single")
    assert {k: v.shape for k, v in ddp_tensors.items()} == {k: v.shape for k, v in single_tensors.items()}
    assert ddp_manifest.method_config == single_manifest.method_config
    assert result["trainable_params"] == single.trainable_params == ddp_manifest.trainable_parameters
    curve = ddp_manifest.provenance.loss_curve
    assert len(curve) == 8 and all(torch.isfinite(torch.tensor(curve)))
    assert sum(curve[-3:]) / 3 < sum(curve[:3]) / 3  # decreasing on average
    assert result["final_loss"] == pytest.approx(single.final_loss, abs=0.3)  # same task, same scale
