"""PEFT interchange: export-peft loads in peft with the same logits; import-peft is strict."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from adapterhub.registry.client import Registry
from adapterhub.registry.peft_interchange import PEFT_CONFIG, PEFT_WEIGHTS, export_peft, import_peft
from safetensors.torch import load_file, save_file

from adapterhub.artifact import write_adapter
from adapterhub.catalog import get_catalog
from adapterhub.errors import ConfigError, IncompatibleAdapterError, UnsafeFileError
from adapterhub.fingerprint import fingerprint
from adapterhub.protocols.basemodel import LoadedBase
from adapterhub.testing.models import tiny_llama

IDS = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def base() -> LoadedBase:
    model, tok = tiny_llama(seed=0)
    return LoadedBase(name="tiny-random-llama", model=model.eval(), tokenizer=tok)


def _ours(base: LoadedBase, adapter_dir: Path) -> torch.Tensor:
    from adapterhub.artifact import read_adapter

    manifest, tensors = read_adapter(adapter_dir)
    method = get_catalog().method(manifest.method)
    model = copy.deepcopy(base.model).eval()
    method.load(model, method.config_cls.model_validate(manifest.method_config), tensors)
    with torch.no_grad():
        return model(input_ids=IDS).logits


def _peft(base: LoadedBase, peft_dir: Path) -> torch.Tensor:
    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = PeftModel.from_pretrained(copy.deepcopy(base.model), str(peft_dir)).eval()
        with torch.no_grad():
            return pm(input_ids=IDS).logits


def _plain(base: LoadedBase) -> torch.Tensor:
    with torch.no_grad():
        return base.model(input_ids=IDS).logits


def _random_adapter(base: LoadedBase, out: Path, method_name: str, config: dict[str, Any]) -> Path:
    method = get_catalog().method(method_name)
    cfg = method.config_cls.model_validate(config)
    model = copy.deepcopy(base.model)
    torch.manual_seed(11)
    adapter = method.attach(model, cfg)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in adapter.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    tensors = adapter.adapter_state()
    adapter.detach()
    fields = {
        "name": "x", "method": method_name, "method_kind": method.kind, "method_config": cfg.model_dump(mode="json"),
        "base": fingerprint(base.model, base.name),
    }
    write_adapter(out, fields, tensors)
    return out


@pytest.mark.parametrize(
    "method_name, config, short_names",
    [
        ("lora", {"r": 4, "alpha": 8.0, "target_modules": ["q_proj", "v_proj"]}, True),
        ("lora", {"r": 2, "alpha": 5.0, "target_modules": "all-linear", "layers": "1"}, False),
        ("prefix-tuning", {"num_virtual_tokens": 4, "init": "normal"}, None),
    ],
)
def test_export_loads_in_peft_with_same_logits(base: LoadedBase, home: Path, tmp_path: Path, method_name: str, config: dict[str, Any], short_names: bool | None) -> None:
    reg = Registry(progress=False)
    reg.push(_random_adapter(base, tmp_path / "a", method_name, config), "team/exp", version="1.0.0")
    from adapterhub.cli.main import main

    out = tmp_path / "peft-out"
    assert main(["export-peft", "team/exp@1.0.0", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [PEFT_CONFIG, PEFT_WEIGHTS]
    cfg = json.loads((out / PEFT_CONFIG).read_text())
    assert cfg["base_model_name_or_path"] == "tiny-random-llama"
    if short_names is not None:
        assert (cfg["target_modules"] == ["q_proj", "v_proj"]) is short_names
    ours, theirs = _ours(base, reg.pull("team/exp@1.0.0")), _peft(base, out)
    assert (ours - theirs).abs().max().item() <= 1e-5
    assert (ours - _plain(base)).abs().max().item() > 1e-3  # the adapter matters
    with pytest.raises(Exception, match="not empty"):
        export_peft(reg.pull("team/exp@1.0.0"), out)


def _peft_lora_dir(base: LoadedBase, out: Path, **cfg: Any) -> Path:
    from peft import LoraConfig, get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = get_peft_model(copy.deepcopy(base.model), LoraConfig(**cfg))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    pm.save_pretrained(str(out))
    return out


def _peft_prefix_dir(base: LoadedBase, out: Path, projection: bool) -> Path:
    from peft import PrefixTuningConfig, get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = get_peft_model(copy.deepcopy(base.model), PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3, prefix_projection=projection))
    gen = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for _, p in pm.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    pm.save_pretrained(str(out))
    return out


@pytest.mark.parametrize(
    "kind, kw",
    [
        ("lora", {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}),
        ("lora", {"r": 4, "lora_alpha": 8, "target_modules": ["k_proj", "down_proj"], "use_rslora": True, "layers_to_transform": [1]}),
        ("lora", {"r": 2, "lora_alpha": 4, "target_modules": "all-linear"}),
        ("prefix", {"projection": False}),
        ("prefix", {"projection": True}),
    ],
)
def test_import_gives_peft_logits(base: LoadedBase, home: Path, tmp_path: Path, kind: str, kw: dict[str, Any]) -> None:
    src = _peft_lora_dir(base, tmp_path / "peft", **kw) if kind == "lora" else _peft_prefix_dir(base, tmp_path / "peft", **kw)
    reg = Registry(progress=False)
    ref = import_peft(src, "imported/x", base=base, version="1.0.0", registry=reg)
    assert ref == "imported/x@1.0.0"
    pulled = reg.pull(ref)
    assert (_ours(base, pulled) - _peft(base, src)).abs().max().item() <= 1e-5
    manifest = json.loads((pulled / "manifest.json").read_text())
    assert manifest["base"]["weights_sha256"] == fingerprint(base.model, base.name).weights_sha256
    assert manifest["provenance"]["hyperparameters"]["imported_from"] == "peft"


def test_round_trip_export_import(base: LoadedBase, home: Path, tmp_path: Path) -> None:
    reg = Registry(progress=False)
    reg.push(_random_adapter(base, tmp_path / "a", "lora", {"r": 4, "alpha": 8.0, "target_modules": ["q_proj", "v_proj"]}), "rt/a", version="1.0.0")
    export_peft(reg.pull("rt/a@1.0.0"), tmp_path / "peft")
    import_peft(tmp_path / "peft", "rt/b", base=base, version="1.0.0", registry=reg)
    a = load_file(str(reg.pull("rt/a@1.0.0") / "adapter.safetensors"))
    b = load_file(str(reg.pull("rt/b@1.0.0") / "adapter.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def _rewrite(src: Path, mutate: Any) -> None:
    t = load_file(str(src / PEFT_WEIGHTS))
    mutate(t)
    save_file(t, str(src / PEFT_WEIGHTS))


def test_import_refuses(base: LoadedBase, home: Path, tmp_path: Path) -> None:
    reg = Registry(progress=False)

    def fresh(name: str, **kw: Any) -> Path:
        return _peft_lora_dir(base, tmp_path / name, **{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], **kw})

    d = fresh("unexpected")
    _rewrite(d, lambda t: t.__setitem__("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight", torch.zeros(4, 64)))
    with pytest.raises(IncompatibleAdapterError, match="unexpected LoRA weights"):
        import_peft(d, "bad/x", base=base, registry=reg)
    d = fresh("missing")
    _rewrite(d, lambda t: [t.pop(k) for k in list(t) if "layers.1.self_attn.v_proj" in k])
    with pytest.raises(IncompatibleAdapterError, match="missing LoRA weights"):
        import_peft(d, "bad/x", base=base, registry=reg)
    d = fresh("odd-key")
    _rewrite(d, lambda t: t.__setitem__("base_model.model.model.norm.weight", torch.ones(64)))
    with pytest.raises(IncompatibleAdapterError, match="unexpected key"):
        import_peft(d, "bad/x", base=base, registry=reg)
    d = fresh("dora", use_dora=True)
    with pytest.raises(ConfigError, match="use_dora"):
        import_peft(d, "bad/x", base=base, registry=reg)
    d = fresh("bin")
    (d / PEFT_WEIGHTS).rename(d / "adapter_model.bin")
    with pytest.raises(UnsafeFileError, match="pickle-based weights are never loaded"):
        import_peft(d, "bad/x", base=base, registry=reg)
    d = fresh("pickle")
    (d / PEFT_WEIGHTS).write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    with pytest.raises(UnsafeFileError):
        import_peft(d, "bad/x", base=base, registry=reg)
    other, _ = tiny_llama(seed=1, num_hidden_layers=3)
    with pytest.raises(IncompatibleAdapterError):
        import_peft(fresh("shape"), "bad/x", base=LoadedBase(name="other", model=other, tokenizer=None), registry=reg)
    assert list(reg.local.list_names()) == []


def test_import_takes_the_base_from_adapter_config(base: LoadedBase, home: Path, tmp_path: Path) -> None:
    src = _peft_lora_dir(base, tmp_path / "peft", r=4, lora_alpha=8, target_modules=["q_proj"])
    cfg = json.loads((src / PEFT_CONFIG).read_text())
    cfg["base_model_name_or_path"] = "tiny-random-llama"  # the registered alias of the same model
    (src / PEFT_CONFIG).write_text(json.dumps(cfg))
    reg = Registry(progress=False)
    from adapterhub.cli.main import main

    assert main(["import-peft", str(src), "imported/auto@1.0.0"]) == 0
    manifest = json.loads((reg.pull("imported/auto@1.0.0") / "manifest.json").read_text())
    assert manifest["base"]["name"] == "tiny-random-llama"

    cfg["base_model_name_or_path"] = None
    (src / PEFT_CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="names no base_model_name_or_path; give the base with --base"):
        import_peft(src, "imported/none", registry=reg)
    assert reg.ls() == [e for e in reg.ls() if e["name"] != "imported/none"]
