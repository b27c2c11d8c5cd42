"""``adapterhub generate`` and ``adapterhub chat`` end to end in a subprocess."""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapterhub.basemodels import load_base
from adapterhub.cli.main import main
from adapterhub.testing.adapters import make_adapter


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture()
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Run the real CLI entry point in-process (saves a torch import per call)."""

    def _run(args: list[str], stdin: str | None = None) -> Result:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        code = main(args)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return _run


@pytest.fixture(scope="module")
def adapter_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-adapters")
    base = load_base("tiny-random-llama")
    out = {}
    for name, method, cfg in (("senti", "lora", {"r": 2, "alpha": 4}), ("summ", "prefix-tuning", {"num_virtual_tokens": 3})):
        make_adapter(method, base.model, root / name, config=cfg, name=name, version="1.0.0", seed=len(name), scale=2.0)
        out[name] = root / name
    return out


def test_generate_json_lines(run, adapter_dirs: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    res = run(["generate", "--base", "tiny-random-llama", "--adapter", str(adapter_dirs["senti"]),
                "--max-new-tokens", "4", "--json", "good film", "bad film"])
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["prompt"] for r in rows] == ["good film", "bad film"]
    for r in rows:
        assert r["adapter"] == "senti@1.0.0"
        assert isinstance(r["completion"], str) and 0 < len(r["token_ids"]) <= 4


def test_generate_mixed_batch_file(run, adapter_dirs: dict[str, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "a review", "adapter": str(adapter_dirs["senti"])},
        {"prompt": "an abstract", "adapter": str(adapter_dirs["summ"])},
        {"prompt": "plain"},
    ]) + "\n")
    res = run(["generate", "--base", "tiny-random-llama", "--batch", str(batch), "--max-new-tokens", "3", "--json"])
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["adapter"] for r in rows] == ["senti@1.0.0", "summ@1.0.0", None]


def test_generate_bad_batch_is_one_line(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    batch = tmp_path / "bad.jsonl"
    batch.write_text('{"prompt": "ok"}\n{not json}\n')
    res = run(["generate", "--base", "tiny-random-llama", "--batch", str(batch)])
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("adapterhub: error: ") and "bad.jsonl:2" in res.stderr


def test_chat_switches_adapters_live(run, adapter_dirs: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    script = "\n".join([
        "hello", ":adapters", ":use summ", "hello", ":use nope", ":use base", "hello", ":quit",
    ]) + "\n"
    res = run(["chat", "--base", "tiny-random-llama", "--adapter", str(adapter_dirs["senti"]),
                "--adapter", str(adapter_dirs["summ"]), "--max-new-tokens", "3"], stdin=script)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("[senti@1.0.0] ")
    assert any(line.startswith("* senti@1.0.0") for line in lines)
    assert "using summ" in lines
    assert any(line.startswith("[summ@1.0.0] ") for line in lines)
    assert any(line.startswith("error: ") and "nope" in line for line in lines)
    after = lines[lines.index("using base"):]
    assert any(line.startswith("[base] ") for line in after)
