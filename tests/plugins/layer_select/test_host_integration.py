"""layer-selective adapters served by the real AdapterHost, beside a LoRA adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from adapterhub.artifact import write_adapter
from adapterhub.catalog import get_catalog
from adapterhub.fingerprint import fingerprint
from adapterhub.host import AdapterHost
from adapterhub.host.host import format_for
from adapterhub.protocols.basemodel import LoadedBase
from adapterhub.testing.models import tiny_llama

BASE = "tiny-random-llama"


def _write(tmp: Path, name: str, method_name: str, config: Any, seed: int) -> Any:
    """An adapter artifact with random (non-trivial) weights; returns the reference model."""
    method = get_catalog().method(method_name)
    model, _ = tiny_llama(seed=0)
    fp = fingerprint(model, BASE)
    adapter = method.attach(model, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    fields = {"name": name, "method": method_name, "method_kind": method.kind,
              "method_config": config.model_dump(mode="json"), "base": fp}
    write_adapter(tmp / name, fields, adapter.adapter_state())
    return model.eval()


def test_grouped_selective_rows_beside_lora_rows(tmp_path: Path) -> None:
    cat = get_catalog()
    sel, lora = cat.method("layer-selective"), cat.method("lora")
    refs: dict[str | None, Any] = {
        "a": _write(tmp_path, "a", "layer-selective", sel.config_cls.model_validate({"layers": "1"}), 1),
        "b": _write(tmp_path, "b", "layer-selective", sel.config_cls.model_validate({"kinds": "norm"}), 2),
        "lo": _write(tmp_path, "lo", "lora", lora.config_cls.model_validate({"r": 4}), 3),
        None: tiny_llama(seed=0)[0].eval(),
    }
    model, tok = tiny_llama(seed=0)
    host = AdapterHost(LoadedBase(name=BASE, model=model, tokenizer=tok), device="cpu", dtype=torch.float32)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for adapter in ("a", "b", "lo"):
        host.load(tmp_path / adapter, name=adapter)
    prompts = ["hello there", "good movie", "bad", "ok fine", "x"]
    names: list[str | None] = ["a", "lo", "b", None, "a"]
    out = host.logits(prompts, adapters=names)
    for prompt, name, got in zip(prompts, names, out, strict=True):
        ids = host.tokenizer([format_for(host.tokenizer, prompt, None, False)], return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            want = refs[name](**ids).logits[0]
        assert got.shape == want.shape
        assert float((got - want).abs().max()) <= 1e-5, name
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # swapped back out
