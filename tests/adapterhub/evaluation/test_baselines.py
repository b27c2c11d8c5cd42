"""compare-baselines: base at 0/1/5 shots beside adapters, as a table, JSON and a PNG."""

from __future__ import annotations

import json

import pytest

from adapterhub.cli.main import main
from adapterhub.errors import ConfigError
from adapterhub.evaluation.baselines import (
    BaselineRow,
    Comparison,
    compare_baselines,
    pick_metric,
    short_label,
)


@pytest.fixture
def adapter_dir(tmp_path, home):
    from adapterhub.testing.adapters import make_adapter
    from adapterhub.testing.models import tiny_llama

    model, _ = tiny_llama(seed=0)
    make_adapter("lora", model, tmp_path / "ad", config={"r": 4}, scale=0.3, task="sentiment-rt", name="sent")
    return tmp_path / "ad"


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_table_json_and_png(capsys, adapter_dir, tmp_path):
    out_dir = tmp_path / "cmp"
    argv = ["compare-baselines", "--task", "sentiment-rt", "--adapter", str(adapter_dir), "--adapter", str(adapter_dir),
            "--limit", "3", "--out", str(out_dir)]
    rc, out, err = run(capsys, *argv)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["MODEL", "SHOTS", "ACCURACY", "CI95", "PROMPT_TOK", "N", "SECONDS"]
    assert [ln.split()[:2] for ln in lines[1:4]] == [["base", "0-shot"], ["base", "1-shot"], ["base", "5-shot"]]
    assert len(lines) == 6  # header, three base rows, two adapters
    assert {p.name for p in out_dir.iterdir()} == {"baselines.json", "baselines.md", "baselines.png"}
    assert (out_dir / "baselines.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| base 5-shot |" in (out_dir / "baselines.md").read_text()

    rc, out, err = run(capsys, *argv[:-2], "--shots", "0,2", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["task"] == "sentiment-rt" and doc["metric"] == "accuracy" and doc["base"] == "tiny-random-llama"
    assert [(r["kind"], r["shots"]) for r in doc["rows"]] == [("base", 0), ("base", 2), ("adapter", 0), ("adapter", 0)]
    assert all(r["examples"] == 3 for r in doc["rows"])
    for r in doc["rows"]:  # every row: n and its Wilson interval around the value
        iv = r["intervals"]["accuracy"]
        assert iv["n"] == 3 and iv["method"] == "wilson" and iv["low"] <= r["metrics"]["accuracy"] <= iv["high"]
    tokens = [r["prompt_tokens_mean"] for r in doc["rows"]]
    assert tokens[1] > tokens[0] == tokens[2]  # shots cost context; the adapter is prompted zero-shot
    assert doc["rows"][0]["cached"]  # base 0-shot outputs came from the eval cache this time


def test_base_only_python_api(home):
    cmp = compare_baselines("tiny-random-llama", "sentiment-rt", [], shots=(0, 1), limit=2, progress=False)
    assert [r.label for r in cmp.rows] == ["base 0-shot", "base 1-shot"]
    assert cmp.table()[0] == ("model", "shots", "accuracy", "ci95", "prompt_tok", "n", "seconds")
    assert cmp.table()[1][3].startswith("[") and cmp.rows[0].interval("accuracy") is not None


def test_metric_choice():
    rows = [BaselineRow("b", "base", 0, {"rouge1": 1.0, "rougeL": 2.0}, 2, 10.0)]
    assert pick_metric(rows, None) == "rougeL"
    assert pick_metric(rows, "rouge1") == "rouge1"
    with pytest.raises(ConfigError, match="metric 'bleu' not among"):
        pick_metric(rows, "bleu")
    assert "| b | 0 | 2.0 | - | 10 | 2 |" in Comparison("t", "m", 0, rows, "rougeL").markdown()  # no interval recorded
    with_ci = [BaselineRow("b", "base", 0, {"rougeL": 2.0}, 2, 10.0, intervals={"rougeL": {"n": 2, "low": 0.5, "high": 3.5}})]
    assert "| b | 0 | 2.0 | [0.5, 3.5] | 10 | 2 |" in Comparison("t", "m", 0, with_ci, "rougeL").markdown()


def test_chart_labels_drop_directories_and_wrap():
    # An unpublished adapter's label carries its directory; on the chart's axis that path
    # overlapped its neighbours (seen in the demo report), so the axis shows the name only.
    assert short_label("demo/sentiment-lora (/tmp/demo-out/adapters/demo--sentiment-lora)") == "demo/sentiment-lora"
    assert short_label("team/x@1.0.0") == "team/x@1.0.0" and short_label("base 5-shot") == "base 5-shot"
    assert short_label("a (b) c") == "a (b) c"  # only a trailing "(directory)" goes
    wrapped = short_label("organisation/a-very-long-adapter-name@10.20.30")
    assert "\n" in wrapped and all(len(line) <= 22 for line in wrapped.splitlines())
    assert wrapped.replace("\n", "") == "organisation/a-very-long-adapter-name@10.20.30"


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--base", "tiny-random-llama", "--shots", "0,x"], "--shots takes comma-separated counts"),
        (["--base", "tiny-random-llama", "--shots", "-1"], "--shots must be 0 or more"),
        (["--base", "tiny-random-llama", "--limit", "0"], "--limit must be at least 1"),
        ([], "give --base and/or --adapter"),
        (["--base", "tiny-random-llama", "--task", "nope"], "unknown task 'nope'"),
    ],
)
def test_errors_are_one_line(capsys, home, extra, needle):
    rc, out, err = run(capsys, "compare-baselines", "--task", "sentiment-rt", *extra)
    assert rc == 1 and out == "" and needle in err and len(err.strip().splitlines()) == 1, err
