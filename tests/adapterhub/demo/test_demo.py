"""``adapterhub demo --quick``: the whole main job on the tiny model, twice (reuse)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from adapterhub.registry.client import Registry

from adapterhub.cli.main import main
from adapterhub.manifest import read_manifest


def test_quick_demo_runs_end_to_end_and_reuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["base"] == "tiny-random-llama"
    methods = {a["method"] for a in summary["adapters"]}
    assert methods == {"lora", "prefix-tuning"}
    for a in summary["adapters"]:
        assert a["trainable_params"] > 0 and a["adapter_bytes"] > 0
        assert a["forgetting"]["rows"], "forgetting report has rows"
        assert a["task"] in {r["task"] for r in a["forgetting"]["rows"]}
        # n and the 95 % interval beside every number: own task (base and adapted), each
        # forgetting row (paired, with its verdict) and each few-shot baseline row.
        metric = next(iter(a["adapted"]))
        for key in ("base_intervals", "adapted_intervals"):
            iv = a[key][metric]
            assert iv["n"] >= 1 and iv["method"] in ("wilson", "bootstrap") and iv["low"] <= iv["high"]
        for r in a["forgetting"]["rows"]:
            assert r["n"] == 2 and r["ci_low"] <= r["delta"] <= r["ci_high"] and r["verdict"] in ("forgotten", "unresolved", "kept")
        assert all(row["intervals"] for row in a["baselines"]["rows"])
    # Both adapters answered one mixed batch, each row labelled with its adapter.
    answers = summary["serving"]["answers"]
    assert sorted(x["adapter"].split("@")[0] for x in answers) == ["demo/aclsum-prefix", "demo/sentiment-lora"]
    # Then over HTTP, through the openai client: each adapter and the bare base, the last streamed.
    http = summary["http"]["answers"]
    assert [x["model"].split("@")[0] for x in http] == ["demo/sentiment-lora", "demo/aclsum-prefix", "base"]
    assert all("@" in x["model"] for x in http[:2]) and [x["streamed"] for x in http] == [False, False, True]
    assert all(isinstance(x["completion"], str) for x in http)
    # Manifests carry metrics + forgetting; the registry holds both versions.
    for d in (out / "adapters").iterdir():
        m = read_manifest(d)
        assert m.metrics and m.forgetting is not None
    names = {item["name"] for item in Registry(root=out / "registry").ls()}
    assert names == {"demo/aclsum-prefix", "demo/sentiment-lora"}
    for f in ("README.md", "summary.json", "loss_curves.png", "base_vs_adapted.png", "forgetting.png",
              "baselines-sentiment-rt.png", "baselines-summarize-aclsum.png"):
        assert (out / "report" / f).stat().st_size > 0
    # Is the adapter worth it: the base at 0, 1 and 5 shots beside it, for both tasks.
    for a in summary["adapters"]:
        rows = a["baselines"]["rows"]
        assert [(r["kind"], r["shots"]) for r in rows] == [("base", 0), ("base", 1), ("base", 5), ("adapter", 0)]
        assert a["baselines"]["task"] == a["task"]
        # Shots cost context, or (abstracts on the tiny model's 512-token window) are dropped.
        assert rows[2]["prompt_tokens_mean"] > rows[0]["prompt_tokens_mean"] or rows[2]["shots_dropped"] == 5 * rows[2]["examples"]
    report = (out / "report" / "README.md").read_text()
    assert "## Base few-shot vs adapter" in report
    assert "| n | base [95% ci] | adapted [95% ci] |" in report and "| ci95 | ± | verdict |" in report
    assert "its 95 % confidence interval" in report
    assert "stage" not in captured.out  # progress and stage lines go to stderr

    # A re-run reuses the trained adapters, the stored evaluation and the published versions.
    assert main(["demo", "--quick", "--out", str(out), "--json"]) == 0
    again = capsys.readouterr()
    assert again.err.count("reusing") >= 4 and again.err.count("already published") == 2
    assert json.loads(again.out)["adapters"][0]["adapter"] == summary["adapters"][0]["adapter"]
    # the stored evaluation kept its intervals: the re-run reads them, never recomputes
    assert json.loads(again.out)["adapters"][0]["adapted_intervals"] == summary["adapters"][0]["adapted_intervals"]


def test_quick_demo_text_summary_shows_n_and_intervals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if line.startswith("adapter "))
    assert "n" in header.split() and "base [95% ci]" in header and "adapted [95% ci]" in header
    assert "paired 95% interval" in text and "VERDICT".lower() in text and "forgotten only once it exceeds" in text
