"""load_base: aliases, directories, plugin-resolved ids, HF ids offline; atomic cache builds."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from adapterhub import catalog as catalog_mod
from adapterhub.basemodels import MARKER, load_base, materialize_dir, read_marker, resolve
from adapterhub.errors import BaseModelError
from adapterhub.fingerprint import fingerprint
from adapterhub.hookspecs import hookimpl
from adapterhub.pluginmanager import build_plugin_manager
from adapterhub.testing.models import save_model_dir, tiny_llama, tiny_llama_dir


@pytest.fixture
def model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "models"
    monkeypatch.setenv("ADAPTERHUB_MODEL_CACHE", str(cache))
    return cache


def test_tiny_alias_loads_frozen_left_padded(model_cache: Path) -> None:
    base = load_base("tiny-random-llama")
    assert base.name == "tiny-random-llama" and base.path == str(model_cache / "tiny-random-llama")
    assert read_marker(Path(base.path)) is not None
    assert base.tokenizer.pad_token == "<pad>" and base.tokenizer.padding_side == "left"
    assert not any(p.requires_grad for p in base.model.parameters())
    assert not base.model.training
    # The materialised copy is the same model as the in-memory factory builds.
    ref, _ = tiny_llama()
    assert fingerprint(base.model, "t").weights_sha256 == fingerprint(ref, "t").weights_sha256
    again = load_base("tiny-random-llama", dtype=torch.bfloat16)
    assert next(again.model.parameters()).dtype == torch.bfloat16


def test_local_directory(tmp_path: Path, model_cache: Path) -> None:
    d = tiny_llama_dir(tmp_path / "mymodel", seed=3)
    base = load_base(str(d))
    assert base.path == str(d.resolve())
    ref, _ = tiny_llama(seed=3)
    assert fingerprint(base.model, "x").weights_sha256 == fingerprint(ref, "x").weights_sha256
    out = base.model.generate(**base.tokenizer(["hi", "hello"], return_tensors="pt", padding=True), max_new_tokens=3, do_sample=False)
    assert out.shape == (2, 8)


def test_pad_token_falls_back_to_eos(tmp_path: Path, model_cache: Path) -> None:
    model, tok = tiny_llama()
    d = save_model_dir(model, tok, tmp_path / "m")
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.pop("pad_token", None)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    base = load_base(str(d))
    assert base.tokenizer.pad_token == base.tokenizer.eos_token == "<|im_end|>"


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(BaseModelError, match="no config.json"):
        load_base(str(tmp_path))


def test_pickle_only_model_is_refused(tmp_path: Path, model_cache: Path) -> None:
    model, tok = tiny_llama()
    d = save_model_dir(model, tok, tmp_path / "m")
    (d / "model.safetensors").unlink()
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    with pytest.raises(BaseModelError, match="cannot load base model") as info:
        load_base(str(d))
    assert "\n" not in str(info.value)


def test_unknown_hub_id_offline_is_one_line() -> None:
    with pytest.raises(BaseModelError) as info:
        load_base("adapterhub-test-org/definitely-not-cached-model")
    msg = str(info.value)
    assert "\n" not in msg and "offline" in msg and "definitely-not-cached-model" in msg


@pytest.mark.parametrize("spec", ["", "../../etc/nothing-here", "a b c", "x\x00y", "/no/such/dir"])
def test_unresolvable_specs(spec: str) -> None:
    with pytest.raises(BaseModelError):
        resolve(spec)


class _Resolver:
    """A third-party plugin that claims every ``acme/*`` id."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @hookimpl
    def adapterhub_resolve_base_model(self, spec: str) -> Any:
        if not spec.startswith("acme/"):
            return None
        directory = self.directory

        class Source:
            name = spec
            description = "acme model"

            def available(self) -> tuple[bool, str]:
                return True, str(directory)

            def local_dir(self) -> str:
                return str(directory)

        return Source()


def test_plugin_hook_resolves_before_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tiny_llama_dir(tmp_path / "acme", seed=7)
    pm = build_plugin_manager(builtins=["adapterhub.plugins.models"], entry_points=[], environ={})
    pm.register(_Resolver(d), name="acme-resolver")
    monkeypatch.setattr(catalog_mod, "_catalog", catalog_mod.Catalog(pm))
    kind, source = resolve("acme/tiny")
    assert kind == "plugin" and source is not None
    base = load_base("acme/tiny")
    assert base.name == "acme/tiny" and base.path == str(d)
    assert resolve("tiny-random-llama")[0] == "alias"
    assert resolve("other/model")[0] == "hub"


# --- materialize_dir ---------------------------------------------------------------------
def _slow_build(tmp: Path) -> None:
    for i in range(5):
        (tmp / f"part{i}.txt").write_text(f"{i}\n" * 1000)
        time.sleep(0.02)


_BUILDER = """
import sys, time
from pathlib import Path
from adapterhub.basemodels import materialize_dir

final, counter = Path(sys.argv[1]), sys.argv[2]

def build(tmp):
    with open(counter, "a") as fh:
        fh.write("x")
    for i in range(5):
        (tmp / f"part{i}.txt").write_text(f"{i}\\n" * 1000)
        time.sleep(0.02)

materialize_dir(final, build, {"v": 1})
"""


def test_concurrent_builders_produce_one_complete_dir(tmp_path: Path) -> None:
    final, counter = tmp_path / "m", tmp_path / "count"
    procs = [subprocess.Popen([sys.executable, "-c", _BUILDER, str(final), str(counter)]) for _ in range(4)]
    for p in procs:
        assert p.wait(120) == 0
    assert sorted(p.name for p in final.iterdir()) == [MARKER] + [f"part{i}.txt" for i in range(5)]
    assert counter.read_text() == "x"  # the lock spared the others the duplicate work
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", "count", "m"]


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "m"

    def broken(tmp: Path) -> None:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        materialize_dir(final, broken, {"v": 1})
    assert not final.exists()
    assert [p.name for p in tmp_path.iterdir()] == [".m.lock"]


def test_stale_or_incomplete_dir_is_rebuilt(tmp_path: Path) -> None:
    final = tmp_path / "m"
    final.mkdir()
    (final / "garbage").write_text("left by a pre-marker crash")
    materialize_dir(final, _slow_build, {"v": 1})
    assert not (final / "garbage").exists() and read_marker(final) == {"key": {"v": 1}}
    built: list[int] = []
    materialize_dir(final, lambda tmp: built.append(1), {"v": 1})
    assert built == []  # up to date: no rebuild
    materialize_dir(final, lambda tmp: (tmp / "new").write_text("2"), {"v": 2})
    assert (final / "new").exists() and not (final / "part0.txt").exists()
