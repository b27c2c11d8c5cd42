"""Commands that need no model import no torch, transformers, peft, datasets or evaluate.

Each command runs in a fresh interpreter through the real ``main`` with every built-in
plugin (the catalog imports them all), then reports which heavy modules ended up in
``sys.modules``. Start-up is most of what ``adapterhub score`` costs next to calling
rouge-score or sacrebleu directly (benchmarks/score.py); one stray top-level
``import torch`` in any plugin would add seconds to every such command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers", "peft", "datasets", "evaluate", "safetensors")

RUN_MAIN = """
import contextlib, io, json, sys
from adapterhub.cli.main import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        rc = main(sys.argv[1:])
    except SystemExit as exc:  # --help
        rc = exc.code
print(json.dumps({"rc": rc, "stdout": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def _run(*argv: str, cwd: Path) -> dict[str, object]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", RUN_MAIN, *argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0, done.stderr
    return result


def _heavy(result: dict[str, object]) -> list[str]:
    modules = result["modules"]
    assert isinstance(modules, list)
    return sorted({m.split(".")[0] for m in modules} & set(HEAVY))


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("score")
    (d / "preds.txt").write_text("the cat sat on mat\na dog runs\n", encoding="utf-8")
    (d / "refs.txt").write_text("the cat sat on the mat\nthe dog runs\n", encoding="utf-8")
    return d


@pytest.mark.parametrize("metric", ["bleu", "rouge"])
def test_score_imports_no_model_libraries(texts: Path, metric: str) -> None:
    result = _run("score", "--metric", metric, "-p", "preds.txt", "-r", "refs.txt", "--json", cwd=texts)
    assert _heavy(result) == []
    assert {"bleu": "score", "rouge": "rouge1"}[metric] in json.loads(str(result["stdout"]))
    modules = result["modules"]
    assert isinstance(modules, list)
    # Default options need no validation: pydantic (~60 ms of start-up) stays unloaded too.
    assert "pydantic" not in modules


@pytest.mark.parametrize(
    "argv",
    [
        ("methods", "--json"),
        ("methods",),
        ("plugins", "--json"),
        ("evaluators", "--json"),
        ("tasks", "--json"),
        ("stores", "--json"),
        ("models", "--json"),
        ("--help",),
        ("train", "--help"),
    ],
    ids=lambda a: " ".join(a),
)
def test_listing_commands_import_no_model_libraries(argv: tuple[str, ...], tmp_path: Path) -> None:
    assert _heavy(_run(*argv, cwd=tmp_path)) == []


def test_methods_json_still_describes_every_builtin(tmp_path: Path) -> None:
    rows = json.loads(str(_run("methods", "--json", cwd=tmp_path)["stdout"]))
    by_name = {r["name"]: r for r in rows}
    assert {"lora", "prefix-tuning", "layer-selective", "full"} <= set(by_name)
    lora = by_name["lora"]
    assert lora["kind"] == "reparameterization"
    assert lora["capabilities"] == {"hot_swap": True, "mixed_batch": True, "merge": True}
    assert lora["plugin"] == "adapterhub.plugins.lora"
    assert {"r", "alpha", "target_modules"} <= set(lora["config_schema"]["properties"])
    assert by_name["layer-selective"]["config_schema"]["properties"]["kinds"]
    assert by_name["full"]["config_schema"]["properties"]["restorable"]["default"] is True


@pytest.mark.parametrize("argv", [("--help",), ("sign", "--help"), ("keys", "list"), ("pull", "--help")], ids=lambda a: " ".join(a))
def test_signing_libraries_load_only_when_signing_or_checking(argv: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cryptography and model-signing (~0.5 s to import) stay out of every other command's start-up."""
    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path / "home"))
    modules = _run(*argv, cwd=tmp_path)["modules"]
    assert isinstance(modules, list)
    assert not {m.split(".")[0] for m in modules} & {"cryptography", "model_signing", "pydantic"}
