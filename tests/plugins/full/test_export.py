"""Exporting a full fine-tune as a standard transformers model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from adapterhub.plugins.full import METHOD, FullConfig, export_model_dir
from adapterhub.plugins.full.export import EXPORT_MANIFEST, MODEL_WEIGHTS
from transformers import AutoModelForCausalLM, AutoTokenizer

from adapterhub.artifact import write_adapter
from adapterhub.errors import ArtifactError, ConfigError
from adapterhub.fingerprint import fingerprint
from adapterhub.testing.models import tiny_llama, tiny_llama_dir


def _model() -> Any:
    return tiny_llama(seed=0)[0]


def _inputs() -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(3))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@torch.no_grad()
def _logits(model: Any) -> torch.Tensor:
    model.eval()
    return model(**_inputs()).logits.clone()


def _train(model: Any, params: list[torch.nn.Parameter], steps: int = 2) -> None:
    opt = torch.optim.AdamW(params, lr=1e-2)
    model.train()
    for _ in range(steps):
        batch = _inputs()
        model(**batch, labels=batch["input_ids"]).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


@pytest.fixture(scope="module")
def trained_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, torch.Tensor]:
    root = tmp_path_factory.mktemp("full")
    base_dir = tiny_llama_dir(root / "base")
    model = _model()
    fp = fingerprint(model, "tiny-random-llama")
    adapter = METHOD.attach(model, FullConfig())
    _train(model, adapter.trainable_parameters())
    fields = {
        "name": "full-ft", "method": "full", "method_kind": "full",
        "method_config": FullConfig().model_dump(), "base": fp,
    }
    write_adapter(root / "adapter", fields, adapter.adapter_state())
    return root / "adapter", base_dir, _logits(model)


def test_export_model_dir_loads_with_from_pretrained(trained_artifact: Any, tmp_path: Path) -> None:
    adapter_dir, base_dir, trained = trained_artifact
    dest = export_model_dir(adapter_dir, tmp_path / "model", base_dir)
    names = sorted(p.name for p in dest.iterdir())
    assert {"config.json", MODEL_WEIGHTS, EXPORT_MANIFEST, "tokenizer.json"} <= set(names)
    model = AutoModelForCausalLM.from_pretrained(dest)
    assert torch.equal(_logits(model), trained)
    tok = AutoTokenizer.from_pretrained(dest)
    assert tok.decode(tok("hello")["input_ids"]) == "hello"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging leftovers


def test_export_refuses_existing_and_overwrites_on_request(trained_artifact: Any, tmp_path: Path) -> None:
    adapter_dir, base_dir, _ = trained_artifact
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="already exists"):
        export_model_dir(adapter_dir, dest, base_dir)
    assert (dest / "keep.txt").exists()
    export_model_dir(adapter_dir, dest, base_dir, overwrite=True)
    assert not (dest / "keep.txt").exists() and (dest / MODEL_WEIGHTS).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_export_refuses_bad_inputs(trained_artifact: Any, tmp_path: Path) -> None:
    adapter_dir, _, _ = trained_artifact
    with pytest.raises(ConfigError, match="no config.json"):
        export_model_dir(adapter_dir, tmp_path / "m", tmp_path)
    assert not (tmp_path / "m").exists()
    model = _model()
    fields = {"name": "sel", "method": "layer-selective", "method_kind": "selective",
              "method_config": {}, "base": fingerprint(model, "tiny-random-llama")}
    write_adapter(tmp_path / "sel", fields, {"model.norm.weight": torch.ones(64)})
    with pytest.raises(ArtifactError, match="only 'full' adapters"):
        export_model_dir(tmp_path / "sel", tmp_path / "m", tmp_path)
