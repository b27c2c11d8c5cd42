"""The example third-party plugin ``adapterhub-ia3``, pip-installed, used with no core edit.

The distribution under ``examples/adapterhub-ia3`` is copied (so the build leaves
nothing in the source tree) and installed with
``pip install --no-deps --no-build-isolation --target <tmp>``; everything below finds it
only through its ``adapterhub`` entry point:

* the real ``adapterhub plugins --json`` lists it (subprocess, ``PYTHONPATH=<tmp>``);
* the example's own test suite (built on ``adapterhub.testing``) passes against the
  installed copy;
* adapterhub's trainer trains it (loss goes down) and writes the artifact; the artifact
  reads back verified, loads onto a fresh base, and hot-swaps in an ``AdapterHost``
  mixed batch next to rows without an adapter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from adapterhub.artifact import read_adapter
from adapterhub.catalog import get_catalog, reset_catalog
from adapterhub.prompting import format_prompt
from adapterhub.protocols.basemodel import LoadedBase
from adapterhub.protocols.task import Example
from adapterhub.testing import tiny_llama
from adapterhub.testing.adapters import make_adapter

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "adapterhub-ia3"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ia3_site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(copy of the example project, pip --target dir it was installed into)."""
    root = tmp_path_factory.mktemp("ia3")
    project = root / "adapterhub-ia3"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    site = root / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(site), str(project)]
    done = subprocess.run(pip, capture_output=True, text=True, timeout=600, cwd=root)
    assert done.returncode == 0, done.stderr
    assert (site / "adapterhub_ia3" / "__init__.py").is_file()
    return project, site


def _env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTERHUB_") or k in ("ADAPTERHUB_HOME", "ADAPTERHUB_MODEL_CACHE")}
    env["PYTHONPATH"] = str(site)
    return env


def test_listed_by_adapterhub_plugins(ia3_site: tuple[Path, Path]) -> None:
    _, site = ia3_site
    done = subprocess.run([str(BIN / "adapterhub"), "plugins", "--json"], capture_output=True, text=True, timeout=300, env=_env(site))
    assert done.returncode == 0, done.stderr
    row = next(r for r in json.loads(done.stdout) if r["name"] == "ia3")
    assert row == {
        "name": "ia3", "version": "0.1.0", "builtin": False, "distribution": "adapterhub-ia3", "source": "adapterhub_ia3",
        "status": "loaded", "error": None, "registered": {"methods": ["ia3"]}, "load_seconds": row["load_seconds"],
    }


def test_example_suite_passes_against_the_installed_distribution(ia3_site: tuple[Path, Path]) -> None:
    project, site = ia3_site
    cmd = [str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", "tests"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env(site), cwd=project)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


@pytest.fixture
def ia3_in_process(ia3_site: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(ia3_site[1]))
    reset_catalog()
    yield
    reset_catalog()
    for mod in [m for m in sys.modules if m == "adapterhub_ia3" or m.startswith("adapterhub_ia3.")]:
        del sys.modules[mod]


EXAMPLES = [Example(prompt=f"Repeat the word {w}.", completion=f"{w} {w}") for w in ("apple", "stone", "river", "cloud", "paper", "light", "green", "quiet")]


def test_trained_saved_loaded_and_hot_swapped(ia3_in_process: None, tmp_path: Path) -> None:
    from adapterhub.host import AdapterHost
    from adapterhub.trainer import train

    cat = get_catalog()
    assert cat.owner("methods", "ia3") == "ia3"
    assert cat.method("ia3").__module__ == "adapterhub_ia3.method"

    model, tokenizer = tiny_llama(seed=0)
    base = LoadedBase(name="tiny-random-llama", model=model, tokenizer=tokenizer)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(base, "ia3", None, EXAMPLES, out_dir=tmp_path / "ia3-adapter", steps=20, batch_size=8, lr=0.3, warmup=0, schedule="constant", seed=0)
    assert result.method == "ia3" and result.trainable_params == 2 * (32 + 32 + 128)
    assert result.final_loss < result.initial_loss - 0.1, result.loss_curve
    # The trainer detached the adapter: the base is bit-identical again.
    assert all(torch.equal(base_state[k], v) for k, v in model.state_dict().items())

    manifest, tensors = read_adapter(result.adapter_dir)  # sizes + sha256 verified
    assert (manifest.method, manifest.method_kind) == ("ia3", "additive")
    assert sorted(tensors) == sorted(f"model.layers.{i}.{m}.ia3_l" for i in range(2) for m in ("self_attn.k_proj", "self_attn.v_proj", "mlp.down_proj"))
    assert any(not torch.equal(t, torch.ones_like(t)) for t in tensors.values())  # it learned something

    # Load onto a fresh base the plain way: the reference for the host below.
    ref_model, _ = tiny_llama(seed=0)
    method = cat.method("ia3")
    attached = method.load(ref_model, method.config_cls.model_validate(manifest.method_config), tensors)

    host_model, host_tok = tiny_llama(seed=0)
    host = AdapterHost(LoadedBase(name="tiny-random-llama", model=host_model, tokenizer=host_tok), device="cpu")
    host.load(result.adapter_dir, name="echo")
    prompts = ["Repeat the word apple.", "Repeat the word stone."]
    mixed = host.logits(prompts, adapters=["echo", None])
    alone_base = host.logits([prompts[1]], adapters=[None])[0]
    alone_ia3 = host.logits([prompts[0]], adapters=["echo"])[0]
    assert torch.allclose(mixed[0], alone_ia3, atol=1e-5)
    assert torch.allclose(mixed[1], alone_base, atol=1e-5)
    assert not torch.allclose(alone_ia3, host.logits([prompts[0]], adapters=[None])[0], atol=1e-3)

    # The host's adapter row matches the plainly attached adapter on the same tokens.
    ids = host_tok(format_prompt(host_tok, prompts[0]), return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        direct = ref_model(input_ids=ids).logits[0].float()
    assert torch.allclose(alone_ia3, direct, atol=1e-4)
    attached.detach()

    # IA³ next to LoRA on the same host and in the same batch. LoRA's runtime wraps
    # k_proj/v_proj after IA³'s runtime exists (and before the second IA³ plan): IA³
    # must still apply, and each row must equal that row served alone.
    lora_model, _ = tiny_llama(seed=0)
    make_adapter("lora", lora_model, tmp_path / "lora-adapter", config={"r": 4, "target_modules": ["q_proj", "v_proj", "down_proj"]}, name="lo")
    host.load(tmp_path / "lora-adapter", name="lo")
    host.load(result.adapter_dir, name="echo2")
    four = prompts + ["Repeat the word river.", "Repeat the word cloud."]
    rows = ["lo", "echo", None, "echo2"]
    together = host.logits(four, adapters=rows)
    for i, adapter in enumerate(rows):
        alone = host.logits([four[i]], adapters=[adapter])[0]
        assert torch.allclose(together[i], alone, atol=1e-5), (i, adapter)
    assert torch.allclose(host.logits([prompts[0]], adapters=["echo2"])[0], direct, atol=1e-4)
    assert not torch.allclose(host.logits([four[2]], adapters=["lo"])[0], host.logits([four[2]], adapters=[None])[0], atol=1e-4)



def test_declared_training_defaults_are_listed_and_used(ia3_site: tuple[Path, Path], ia3_in_process: None, tmp_path: Path) -> None:
    """The plugin declares its lr as a plain mapping (no new import needed): listed, and used without --lr."""
    _, site = ia3_site
    done = subprocess.run([str(BIN / "adapterhub"), "methods", "--json"], capture_output=True, text=True, timeout=300, env=_env(site))
    assert done.returncode == 0, done.stderr
    row = next(r for r in json.loads(done.stdout) if r["name"] == "ia3")
    from adapterhub.protocols.method import training_defaults_of
    from adapterhub.trainer import train

    declared = training_defaults_of(get_catalog().method("ia3"))
    assert declared is not None and row["training_defaults"] == declared.as_dict() and declared.lr >= 1e-3
    model, tokenizer = tiny_llama(seed=0)
    result = train(LoadedBase(name="tiny-random-llama", model=model, tokenizer=tokenizer), "ia3", None, EXAMPLES,
                   out_dir=tmp_path / "d", steps=2, batch_size=8, progress=False)
    assert (result.lr, result.lr_source) == (declared.lr, "method default")
