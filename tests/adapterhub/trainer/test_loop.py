from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from adapterhub.artifact import read_adapter
from adapterhub.catalog import get_catalog
from adapterhub.errors import ConfigError, TrainingError
from adapterhub.fingerprint import fingerprint
from adapterhub.protocols.basemodel import LoadedBase
from adapterhub.protocols.task import Example
from adapterhub.testing.models import tiny_llama
from adapterhub.trainer import checkpoint as ckpt
from adapterhub.trainer.data import tokenize_examples
from adapterhub.trainer.loop import (
    CompletionLoss,
    StepInfo,
    TrainingInterrupted,
    eval_loss,
    train,
)

WORDS = ["zero", "one", "two", "three"]
DATA = [Example(f"Say the word for {i % 4}", WORDS[i % 4]) for i in range(48)]
FAST = {"batch_size": 8, "lr": 1e-2, "progress": False}
# A tiny random model's logits are bounded by its 0.02-scale tied embeddings, so LoRA
# (which cannot rescale them) moves the loss by tenths, not halves: all linears help.
LORA = {"r": 4, "target_modules": "all-linear"}


def fresh_base() -> LoadedBase:
    model, tok = tiny_llama(seed=0)
    return LoadedBase("tiny-random-llama", model, tok)


def tensors(out: Path) -> dict[str, torch.Tensor]:
    return read_adapter(out)[1]


def test_lora_loss_decreases_and_manifest_has_full_provenance(tmp_path: Path) -> None:
    base = fresh_base()
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    res = train(base, "lora", LORA, DATA, out_dir=tmp_path / "a", steps=30, **FAST)
    assert res.final_loss < res.initial_loss - 0.4
    assert sum(res.loss_curve[-5:]) < sum(res.loss_curve[:5])
    assert len(res.loss_curve) == 30 and all(map(torch.isfinite, torch.tensor(res.loss_curve)))
    # the base is given back bit for bit (the adapter is detached after saving)
    after = base.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)

    manifest, weights = read_adapter(tmp_path / "a")
    assert manifest.method == "lora" and manifest.method_kind == "reparameterization"
    assert manifest.method_config["r"] == 4 and manifest.method_config["target_modules"] == "all-linear"
    assert manifest.trainable_parameters == res.trainable_params == sum(t.numel() for t in weights.values())
    assert manifest.base == fingerprint(fresh_base().model, "tiny-random-llama")
    prov = manifest.provenance
    assert prov.steps == 30 and prov.seed == 0 and prov.num_examples == 48 and prov.data_sha256
    assert prov.hyperparameters["lr"] == 1e-2 and prov.hyperparameters["template"] == "auto"
    assert {"torch", "transformers", "python"} <= set(prov.library_versions)
    assert len(prov.loss_curve) == 30 and prov.seconds and prov.seconds > 0
    assert any(k.endswith("q_proj.lora_A") for k in weights)
    assert not (tmp_path / "a" / "checkpoints").exists()


def test_trained_adapter_reloads_to_the_same_logits(tmp_path: Path) -> None:
    base = fresh_base()
    res = train(base, "lora", LORA, DATA, out_dir=tmp_path / "a", steps=5, keep_attached=True, **FAST)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        trained = base.model(input_ids=ids).logits
    assert res.adapter is not None
    res.adapter.detach()
    manifest, weights = read_adapter(tmp_path / "a")
    method = get_catalog().method("lora")
    method.load(base.model, method.config_cls.model_validate(manifest.method_config), weights)
    with torch.no_grad():
        assert torch.allclose(base.model(input_ids=ids).logits, trained, atol=1e-6)


@pytest.mark.parametrize(
    ("method", "config"),
    [("prefix-tuning", {"num_virtual_tokens": 4}), ("layer-selective", {"layers": "1"}), ("full", {"restorable": False})],
)
def test_other_methods_train(tmp_path: Path, method: str, config: dict[str, Any]) -> None:
    res = train(fresh_base(), method, config, DATA, out_dir=tmp_path / "a", steps=12, **FAST)
    assert res.final_loss < res.initial_loss
    manifest, weights = read_adapter(tmp_path / "a")
    assert manifest.method == method and manifest.trainable_parameters == res.trainable_params > 0


def test_grad_accumulation_matches_a_full_batch(tmp_path: Path) -> None:
    one = train(fresh_base(), "lora", LORA, DATA, out_dir=tmp_path / "a", steps=6, batch_size=8, lr=1e-2, progress=False)
    two = train(fresh_base(), "lora", LORA, DATA, out_dir=tmp_path / "b", steps=6, batch_size=4, grad_accum=2, lr=1e-2, progress=False)
    assert one.loss_curve == pytest.approx(two.loss_curve, rel=1e-5, abs=1e-6)
    ta, tb = tensors(tmp_path / "a"), tensors(tmp_path / "b")
    # Adam divides by sqrt(v): float rounding of the summed gradients shows up ~1e-6
    assert all(torch.allclose(ta[k], tb[k], atol=1e-5) for k in ta)


def _stop_at(step: int) -> Any:
    def cb(info: StepInfo) -> None:
        if info.step == step:
            raise KeyboardInterrupt

    return cb


def test_interrupt_then_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    opts = {**FAST, "steps": 10, "checkpoint_every": 3}
    straight = train(fresh_base(), "lora", LORA, DATA, out_dir=tmp_path / "straight", **opts)
    with pytest.raises(TrainingInterrupted) as err:
        train(fresh_base(), "lora", LORA, DATA, out_dir=tmp_path / "r", callbacks=[_stop_at(5)], **opts)
    assert err.value.step == 5 and err.value.checkpoint == tmp_path / "r" / "checkpoints" / "step-000005"
    # only the newest checkpoint is kept; its optimizer state is safetensors + JSON
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir()) == ["step-000005"]
    assert sorted(p.name for p in err.value.checkpoint.iterdir()) == ["optimizer.safetensors", "state.json", "trainable.safetensors"]
    state = json.loads((err.value.checkpoint / "state.json").read_text())
    assert state["step"] == 5 and all(v["step"] == 5 for v in state["optimizer_scalars"].values())
    assert not (tmp_path / "r" / "manifest.json").exists()

    resumed = train(fresh_base(), "lora", LORA, DATA, out_dir=tmp_path / "r", resume=True, **opts)
    assert resumed.loss_curve == straight.loss_curve
    ta, tb = tensors(tmp_path / "straight"), tensors(tmp_path / "r")
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_resume_refuses_different_settings_or_no_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(TrainingInterrupted):
        train(fresh_base(), "lora", LORA, DATA, out_dir=tmp_path / "r", steps=6, callbacks=[_stop_at(2)], **FAST)
    with pytest.raises(ConfigError, match="method_config"):
        train(fresh_base(), "lora", {**LORA, "r": 8}, DATA, out_dir=tmp_path / "r", steps=6, resume=True, **FAST)
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(fresh_base(), "lora", LORA, DATA, out_dir=tmp_path / "empty", steps=6, resume=True, **FAST)


def test_sigint_finishes_the_step_and_saves_a_checkpoint(tmp_path: Path) -> None:
    def ctrl_c(info: StepInfo) -> None:
        if info.step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered to our handler

    previous = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as err:
        train(fresh_base(), "lora", LORA, DATA, out_dir=tmp_path / "r", steps=10, callbacks=[ctrl_c], **FAST)
    assert err.value.step == 3 and (err.value.checkpoint / "trainable.safetensors").is_file()
    assert isinstance(err.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGINT) is previous  # handler restored
    assert ckpt.latest(tmp_path / "r") is not None


def test_nan_loss_is_a_training_error(tmp_path: Path) -> None:
    base = fresh_base()

    def poison(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
        return output * float("nan")

    base.model.lm_head.register_forward_hook(poison)
    with pytest.raises(TrainingError, match=r"loss is nan at step 1 .*lower --lr"):
        train(base, "lora", LORA, DATA, out_dir=tmp_path / "a", steps=3, **FAST)
    assert not (tmp_path / "a" / "manifest.json").exists()


def test_early_stopping_on_held_out_loss_keeps_the_best_weights(tmp_path: Path) -> None:
    # Held-out completions share no letters with the training words: the held-out loss
    # first falls (the chat format is learnt), then rises as the four words take over.
    evals = [Example(f"Say the word for {i}", "XYZQXYZQXYZQ") for i in range(4)]
    res = train(fresh_base(), "lora", LORA, DATA, out_dir=tmp_path / "a", steps=40, eval_data=evals,
                eval_every=2, early_stopping_patience=2, **FAST)
    assert res.stopped_early and res.steps < 40
    values = [v for _, v in res.eval_losses]
    best = min(values)
    assert values[-1] > best and values[-2] > best and values.index(best) == len(values) - 3
    manifest, weights = read_adapter(tmp_path / "a")
    assert manifest.provenance.hyperparameters["stopped_early"] is True
    assert manifest.metrics["training"]["best_eval_loss"] == pytest.approx(best, abs=1e-5)
    # the saved adapter is the best one, not the last one
    base = fresh_base()
    method = get_catalog().method("lora")
    method.load(base.model, method.config_cls.model_validate(manifest.method_config), weights)
    toks = tokenize_examples(evals, base.tokenizer, max_length=64)
    assert eval_loss(CompletionLoss(base.model, torch.device("cpu")), toks, 8, 258) == pytest.approx(best, rel=1e-5)


def test_holdout_eval_from_training_data(tmp_path: Path) -> None:
    res = train(fresh_base(), "lora", LORA, DATA, out_dir=tmp_path / "a", steps=4, eval_every=2, **FAST)
    assert [s for s, _ in res.eval_losses] == [2, 4]
    assert read_adapter(tmp_path / "a")[0].provenance.num_examples == 48 - 9  # a fifth held out


def test_existing_adapter_is_not_overwritten(tmp_path: Path) -> None:
    train(fresh_base(), "lora", LORA, DATA, out_dir=tmp_path / "a", steps=1, **FAST)
    with pytest.raises(ConfigError, match="already holds an adapter"):
        train(fresh_base(), "lora", LORA, DATA, out_dir=tmp_path / "a", steps=1, **FAST)
    train(fresh_base(), "lora", {**LORA, "r": 2}, DATA, out_dir=tmp_path / "a", steps=1, overwrite=True, **FAST)
    assert read_adapter(tmp_path / "a")[0].method_config["r"] == 2


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown training option 'stpes'"):
        train(fresh_base(), "lora", {}, DATA, out_dir=tmp_path / "a", stpes=3)
    with pytest.raises(ConfigError, match="has no option 'rank'.*allowed: .*alpha"):
        train(fresh_base(), "lora", {"rank": 4}, DATA, out_dir=tmp_path / "a", steps=1)
    with pytest.raises(ConfigError, match="lr must be a positive number"):
        train(fresh_base(), "lora", {}, DATA, out_dir=tmp_path / "a", lr=0)


def test_max_seconds_stops_and_saves(tmp_path: Path) -> None:
    res = train(fresh_base(), "lora", LORA, DATA, out_dir=tmp_path / "a", steps=10_000, max_seconds=0.5, **FAST)
    assert 1 <= res.steps < 10_000 and (tmp_path / "a" / "manifest.json").is_file()


def test_a_callback_returning_true_stops_and_saves(tmp_path: Path) -> None:
    res = train(fresh_base(), "lora", LORA, DATA, out_dir=tmp_path / "a", steps=50,
                callbacks=[lambda info: info.step >= 4], **FAST)
    assert res.steps == 4 and read_adapter(tmp_path / "a")[0].provenance.steps == 4
