"""The training summary (trainable share, peak memory, tokens/s) and each method's
declared training defaults (``--lr`` given always wins; no declaration: trainer default)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapterhub.artifact import read_adapter
from adapterhub.catalog import get_catalog
from adapterhub.cli.main import main
from adapterhub.errors import ConfigError
from adapterhub.protocols.basemodel import LoadedBase
from adapterhub.protocols.method import TrainingDefaults, training_defaults_of
from adapterhub.protocols.task import Example
from adapterhub.testing.models import tiny_llama
from adapterhub.trainer.config import TrainConfig, resolve_lr
from adapterhub.trainer.loop import train

DATA = [Example(f"Say the word for {i % 3}", ["zero", "one", "two"][i % 3]) for i in range(12)]
BUILTIN = ("lora", "prefix-tuning", "layer-selective", "full")


def fresh_base() -> LoadedBase:
    model, tok = tiny_llama(seed=0)
    return LoadedBase("tiny-random-llama", model, tok)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"prompt": e.prompt, "completion": e.completion}) + "\n" for e in DATA), encoding="utf-8")
    return path


def test_train_json_has_the_summary_keys(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--base", "tiny-random-llama", "--no-progress", "--method", "lora", "--data", str(data),
               "--steps", "3", "--batch-size", "4", "--out", str(tmp_path / "a"), "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert {"trainable_share", "peak_memory_bytes", "tokens_per_s", "lr", "lr_source", "base_params"} <= set(result)
    assert 0 < result["trainable_share"] < 1
    assert result["trainable_share"] == pytest.approx(result["trainable_params"] / result["base_params"])
    assert isinstance(result["peak_memory_bytes"], int) and result["peak_memory_bytes"] > 10 * 2**20
    assert result["peak_memory_kind"] in ("rss_peak_run", "rss_peak_process")
    assert result["tokens_per_s"] > 0 and result["tokens_per_s"] == result["tokens_per_second"]
    lora = training_defaults_of(get_catalog().method("lora"))
    assert lora is not None and result["lr"] == lora.lr and result["lr_source"] == "method default"
    training = read_adapter(tmp_path / "a")[0].metrics["training"]
    assert training["trainable_share"] == pytest.approx(result["trainable_share"], rel=1e-4)
    assert training["peak_memory_bytes"] == result["peak_memory_bytes"] and training["tokens_per_s"] > 0


def test_full_fine_tuning_trains_the_whole_base(tmp_path: Path) -> None:
    res = train(fresh_base(), "full", None, DATA, out_dir=tmp_path / "f", steps=2, batch_size=4, progress=False)
    assert res.trainable_share == 1.0 and res.as_dict()["trainable_share"] == 1.0


def test_human_summary_lines(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--base", "tiny-random-llama", "--no-progress", "--method", "prefix-tuning", "--data", str(data),
               "--steps", "2", "--batch-size", "4", "--lr", "0.05", "--out", str(tmp_path / "a")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "% of the base's" in out and "tokens/s" in out and "peak memory" in out and ("MiB" in out or "GiB" in out)  # process-wide peak: grows with the suite before it
    assert "lr           0.05  (given)" in out


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_declares_defaults_and_train_uses_them(name: str, tmp_path: Path) -> None:
    method = get_catalog().method(name)
    found = training_defaults_of(method)
    assert found is not None and found.lr > 0 and found.note
    opts, source = resolve_lr(method, {})
    assert opts["lr"] == found.lr and source == "method default"
    # an explicit lr always wins
    assert resolve_lr(method, {"lr": 0.123}) == ({"lr": 0.123}, "given")
    res = train(fresh_base(), name, None, DATA, out_dir=tmp_path / name, steps=1, batch_size=4, progress=False)
    prov = read_adapter(tmp_path / name)[0].provenance.hyperparameters
    assert res.lr == prov["lr"] == found.lr and prov["lr_source"] == "method default"


def test_defaults_are_ordered_as_the_methods_need() -> None:
    lr = {n: training_defaults_of(get_catalog().method(n)).lr for n in BUILTIN}  # type: ignore[union-attr]
    assert lr["full"] < lr["lora"] < lr["prefix-tuning"]


class _Bare:
    """A third-party method written before training defaults existed: no attribute."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name, self.kind, self.description = "bare", inner.kind, "no defaults"
        self.config_cls, self.capabilities = inner.config_cls, inner.capabilities

    def attach(self, model: Any, config: Any) -> Any:
        return self._inner.attach(model, config)

    def validate(self, *a: Any) -> None:
        self._inner.validate(*a)

    def load(self, *a: Any) -> Any:
        return self._inner.load(*a)

    def runtime(self, model: Any) -> Any:
        return self._inner.runtime(model)


def test_a_method_without_defaults_falls_back_to_the_trainer_default(tmp_path: Path) -> None:
    bare = _Bare(get_catalog().method("lora"))
    assert training_defaults_of(bare) is None
    res = train(fresh_base(), bare, None, DATA, out_dir=tmp_path / "b", steps=1, batch_size=4, progress=False)
    assert res.lr == TrainConfig.lr and res.lr_source == "trainer default"
    assert read_adapter(tmp_path / "b")[0].provenance.hyperparameters["lr_source"] == "trainer default"


def test_defaults_may_be_a_mapping_and_bad_ones_are_one_line_errors() -> None:
    class M:
        name = "m"
        training_defaults: Any = {"lr": 3e-3}

    assert training_defaults_of(M()) == TrainingDefaults(lr=3e-3)
    for bad, message in [({"lr": -1}, "positive number"), ({"lr": 1e-3, "warmup": 3}, "unknown training default 'warmup'"),
                         ("fast", "must be a TrainingDefaults or a mapping"), ({"lr": True}, "positive number")]:
        M.training_defaults = bad
        with pytest.raises(ConfigError, match=message):
            training_defaults_of(M())


def test_methods_listing_shows_default_lr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name in BUILTIN:
        found = training_defaults_of(get_catalog().method(name))
        assert found is not None and rows[name]["training_defaults"] == found.as_dict()
        assert rows[name]["default_lr"] == f"{found.lr:g}"
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "DEFAULT_LR" in out.splitlines()[0]
