"""Report files: JSON that round-trips, a Markdown table, a real PNG chart."""

from __future__ import annotations

import json

from adapterhub.evaluation.forgetting import ForgettingRun
from adapterhub.evaluation.harness import TaskEvaluation
from adapterhub.evaluation.report import (
    forgetting_markdown,
    write_eval_report,
    write_forgetting_report,
)
from adapterhub.manifest import ForgettingReport, ForgettingRow
from adapterhub.protocols.evaluator import EvalResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _task(name: str, headline: dict[str, float]) -> TaskEvaluation:
    return TaskEvaluation(name, "test", 2, "0" * 64, 8, ["x", "y"], [EvalResult("e", {"v": 1}, headline)], 1.5)


def _run() -> ForgettingRun:
    rows = [
        ForgettingRow(task="sentiment-rt", metric="accuracy", base=60.0, adapted=88.0, delta=28.0, flagged=False),
        ForgettingRow(task="summarize-aclsum", metric="rougeL", base=16.4, adapted=12.0, delta=-4.4, flagged=True),
    ]
    report = ForgettingReport(
        threshold=2.0, rows=rows, perplexity_base=10.0, perplexity_adapted=12.5,
        generation={"own_task": "sentiment-rt", "limit": 20, "perplexity_sample": {"texts": 48, "sources": ["chitchat:validation[:24]"]}},
    )
    run = ForgettingRun(report=report, own_task="sentiment-rt", adapter="sent@1.0.0", base_name="smollm2-135m-instruct")
    for t, h in (("sentiment-rt", {"accuracy": 60.0}), ("summarize-aclsum", {"rougeL": 16.4})):
        run.base[t] = _task(t, h)
        run.adapted[t] = _task(t, {k: v - 1 for k, v in h.items()})
    return run


def test_markdown_table_of_a_report_from_before_intervals():
    # Old reports (no n, interval or verdict) still render: the point delta and its flag.
    md = forgetting_markdown(_run().report, "Forgetting")
    assert "| sentiment-rt (own) | accuracy | - | 60.00 | 88.00 | +28.00 | - | - |  |" in md
    assert "| summarize-aclsum | rougeL | - | 16.40 | 12.00 | -4.40 | - | - | over threshold (no interval) |" in md
    assert "base 10.00 → adapted 12.50 (+25.0 %)" in md
    assert "1 of 2 task metrics dropped by more than 2 points (point estimates: this report predates intervals)" in md


def test_markdown_table_with_intervals_and_resolution():
    rows = [
        ForgettingRow(task="sentiment-rt", metric="accuracy", base=60.0, adapted=88.0, delta=28.0, flagged=False,
                      n=20, ci_low=12.0, ci_high=44.0, verdict="kept", resolution=16.0),
        ForgettingRow(task="chitchat", metric="rougeL", base=16.4, adapted=12.0, delta=-4.4, flagged=False,
                      n=20, ci_low=-9.0, ci_high=0.5, verdict="unresolved", resolution=4.75),
        ForgettingRow(task="faq-instruct", metric="rougeL", base=30.0, adapted=20.0, delta=-10.0, flagged=True,
                      n=80, ci_low=-12.5, ci_high=-7.5, verdict="forgotten", resolution=2.5),
    ]
    report = ForgettingReport(threshold=2.0, rows=rows, generation={"own_task": "sentiment-rt", "limit": 20},
                              interval={"method": "paired-bootstrap", "resamples": 2000, "seed": 0})
    md = forgetting_markdown(report)
    assert "| chitchat | rougeL | 20 | 16.40 | 12.00 | -4.40 | [-9.0, +0.5] | 4.8 | unresolved |" in md
    assert "| faq-instruct | rougeL | 80 | 30.00 | 20.00 | -10.00 | [-12.5, -7.5] | 2.5 | forgotten |" in md
    assert "intervals: paired-bootstrap over the test examples, 2000 resamples, seed 0" in md
    # The own task's half-width is not the held-out resolution: 2 + 2.5 (faq) to 2 + 4.75 (chitchat).
    assert "1 forgotten, 1 unresolved, 1 kept" in md
    assert "from 4.5 points (faq-instruct, n=80) to 6.8 points (chitchat, n=20)" in md


def test_write_forgetting_report(tmp_path):
    run = _run()
    files = write_forgetting_report(run, tmp_path / "rep")
    assert set(files) == {"json", "markdown", "chart"}
    doc = json.loads(files["json"].read_text())
    assert ForgettingReport.model_validate(doc["report"]) == run.report
    assert doc["tasks"]["sentiment-rt"]["base"]["predictions"] == ["x", "y"]
    assert files["chart"].read_bytes()[:8] == PNG_MAGIC and files["chart"].stat().st_size > 5000
    assert "Forgetting report: sent@1.0.0 on smollm2-135m-instruct" in files["markdown"].read_text()


def test_write_eval_report(tmp_path):
    files = write_eval_report([_task("chitchat", {"rouge1": 20.0, "rougeL": 18.0})], tmp_path, "base on chitchat", {"base": "b"})
    doc = json.loads(files["json"].read_text())
    assert doc["base"] == "b" and doc["tasks"][0]["metrics"] == {"rouge1": 20.0, "rougeL": 18.0}
    assert "| chitchat | 2 | rougeL | 18.00 | - | none | 1.5 |" in files["markdown"].read_text()  # no statistics: n only
    assert files["chart"].read_bytes()[:8] == PNG_MAGIC
