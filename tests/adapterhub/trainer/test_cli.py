from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapterhub.artifact import read_adapter
from adapterhub.cli.main import main
from adapterhub.trainer import cli as train_cli

ROWS = [{"prompt": f"Say the word for {i % 3}", "completion": ["zero", "one", "two"][i % 3]} for i in range(12)]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


def run(*argv: str) -> int:
    return main(["train", "--base", "tiny-random-llama", "--no-progress", *argv])


def test_json_output_and_artifact(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "adapter"
    rc = run("--method", "lora", "--data", str(data), "--steps", "3", "--batch-size", "4",
             "--set", "r=2", "--set", 'target_modules=["q_proj","v_proj"]', "--set", "alpha=4", "--out", str(out), "--json")
    assert rc == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # stdout is exactly one JSON object
    assert {"adapter_dir", "method", "trainable_params", "steps", "initial_loss", "final_loss", "seconds"} <= set(result)
    assert result["adapter_dir"] == str(out.resolve()) and result["method"] == "lora" and result["steps"] == 3
    manifest, tensors = read_adapter(out)
    assert manifest.method_config["r"] == 2 and manifest.method_config["alpha"] == 4.0
    assert manifest.method_config["target_modules"] == ["q_proj", "v_proj"]
    assert result["trainable_params"] == manifest.trainable_parameters == sum(t.numel() for t in tensors.values())
    assert manifest.provenance.data_sha256 and manifest.provenance.hyperparameters["data_source"] == f"file:{data}"


def test_human_output_for_a_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = run("--method", "layer-selective", "--set", "layers=1", "--task", "translate-sv-en", "--limit", "8",
             "--steps", "2", "--batch-size", "4", "--max-length", "96", "--out", str(tmp_path / "a"))
    assert rc == 0
    out = capsys.readouterr().out
    assert "layer-selective" in out and "trainable parameters" in out and "loss" in out
    manifest = read_adapter(tmp_path / "a")[0]
    assert manifest.task == "translate-sv-en" and manifest.provenance.split_seed == 4321


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["rank=4"], "method 'lora' has no option 'rank' (allowed: alpha, dropout"),
        (["r=abc"], "method 'lora' option 'r': "),
        (["r"], "--set expects key=value, got 'r'"),
    ],
)
def test_set_errors_are_one_line(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str], sets: list[str], message: str) -> None:
    argv = ["--method", "lora", "--data", str(data), "--out", str(tmp_path / "a")]
    for s in sets:
        argv += ["--set", s]
    assert run(*argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("adapterhub: error: ") and message in err and "\n" not in err
    assert not (tmp_path / "a").exists()


def test_bad_rows_fail_with_file_and_line_or_are_skipped(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open(data, "a", encoding="utf-8") as fh:
        fh.write('{"prompt": "x", "completion": ""}\n')
    assert run("--data", str(data), "--steps", "1", "--out", str(tmp_path / "a")) == 1
    assert f"{data}:13: empty completion" in capsys.readouterr().err
    assert run("--data", str(data), "--steps", "1", "--skip-bad-rows", "--out", str(tmp_path / "a")) == 0
    assert "skipped 1 bad row(s)" in capsys.readouterr().err


def test_unknown_method_and_missing_source(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--method", "nope", "--data", str(data), "--out", str(tmp_path / "a")) == 1
    assert "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        run("--out", str(tmp_path / "a"))
    assert exc.value.code == 2


def test_forgetting_hook_gets_the_adapter_and_a_clean_base(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from adapterhub.evaluation import forgetting

    seen: dict[str, Any] = {}

    def after_training(adapter_dir: Path, base: Any, args: Any) -> dict[str, Any]:
        seen["dir"] = adapter_dir
        seen["lora_left"] = any("lora" in n for n, _ in base.model.named_parameters())
        return {"rows": 0}

    monkeypatch.setattr(forgetting, "after_training", after_training, raising=False)
    assert run("--data", str(data), "--steps", "1", "--out", str(tmp_path / "a"), "--forgetting", "--json") == 0
    assert json.loads(capsys.readouterr().out)["forgetting"] == {"rows": 0}
    assert seen == {"dir": tmp_path / "a", "lora_left": False}


def test_module_entry_point_runs_train(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = train_cli.main(["--base", "tiny-random-llama", "--data", str(data), "--steps", "1", "--no-progress",
                         "--out", str(tmp_path / "a"), "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["steps"] == 1
