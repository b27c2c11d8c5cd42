"""Report files: JSON, Markdown and a PNG chart, for ``eval`` and for forgetting.

``write_forgetting_report(run, directory)`` writes ``forgetting.json`` (the
:class:`ForgettingReport` plus per-task details and predictions), ``forgetting.md`` (the
table a README can quote) and ``forgetting.png`` (grouped bars, base vs adapted, per task
and metric; flagged drops outlined in red). ``write_eval_report`` does the same for a
plain evaluation (``results.json``, ``results.md``, ``results.png``). Every file is
written atomically. Charts use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapterhub.evaluation.cache import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from adapterhub.evaluation.forgetting import ForgettingRun
    from adapterhub.evaluation.harness import TaskEvaluation
    from adapterhub.manifest import ForgettingReport


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def forgetting_markdown(report: ForgettingReport, title: str = "Forgetting report") -> str:
    """The report as a Markdown table (task, metric, base, adapted, delta, flag)."""
    gen = report.generation or {}
    own = gen.get("own_task")
    lines = [f"# {title}", ""]
    meta = [f"threshold: a drop of more than {report.threshold:g} points (0–100 scale) is flagged"]
    if own:
        meta.append(f"own task: `{own}`")
    if gen.get("limit"):
        meta.append(f"first {gen['limit']} test examples per task, greedy decoding")
    lines += [f"- {m}" for m in meta] + ["", "| task | metric | base | adapted | delta | flagged |", "|---|---|---:|---:|---:|:---:|"]
    for row in report.rows:
        task = f"**{row.task}** (own)" if row.task == own else row.task
        flag = "⚠ yes" if row.flagged else ""
        lines.append(f"| {task} | {row.metric} | {_fmt(row.base)} | {_fmt(row.adapted)} | {row.delta:+.2f} | {flag} |")
    if report.perplexity_base is not None:
        sample = gen.get("perplexity_sample", {})
        change = ""
        if report.perplexity_adapted is not None and report.perplexity_base:
            change = f" ({(report.perplexity_adapted / report.perplexity_base - 1) * 100:+.1f} %)"
        lines += [
            "",
            f"Perplexity of the general-text sample ({sample.get('texts', '?')} texts: {', '.join(sample.get('sources', []))}): "
            f"base {_fmt(report.perplexity_base)} → adapted {_fmt(report.perplexity_adapted)}{change}.",
        ]
    flagged = [r for r in report.rows if r.flagged]
    lines += ["", f"{len(flagged)} of {len(report.rows)} task metrics dropped by more than {report.threshold:g} points."]
    return "\n".join(lines) + "\n"


def _bars_png(labels: Sequence[str], series: dict[str, Sequence[float]], title: str, flagged: Sequence[bool] | None = None) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * n + 2), 4.2), dpi=110)
    try:
        colors = ["#8c8c8c", "#1f77b4", "#ff7f0e", "#2ca02c"]
        for k, (name, values) in enumerate(series.items()):
            xs = [i + (k - (len(series) - 1) / 2) * width for i in range(n)]
            bars = ax.bar(xs, values, width, label=name, color=colors[k % len(colors)])
            if flagged is not None and k == len(series) - 1:
                for bar, flag in zip(bars, flagged, strict=True):
                    if flag:
                        bar.set_edgecolor("#d62728")
                        bar.set_linewidth(2.0)
        ax.set_xticks(range(n))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("score (0–100)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


def forgetting_chart(report: ForgettingReport, title: str = "Base vs adapted (red outline: flagged drop)") -> bytes:
    labels = [f"{r.task}\n{r.metric}" for r in report.rows]
    return _bars_png(
        labels,
        {"base": [r.base for r in report.rows], "adapted": [r.adapted for r in report.rows]},
        title,
        flagged=[r.flagged for r in report.rows],
    )


def write_forgetting_report(run: ForgettingRun, directory: str | Path) -> dict[str, Path]:
    """forgetting.json / forgetting.md / forgetting.png under ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    title = f"Forgetting report: {run.adapter} on {run.base_name}"
    paths = {"json": out / "forgetting.json", "markdown": out / "forgetting.md", "chart": out / "forgetting.png"}
    atomic_write_text(paths["json"], json.dumps(run.to_dict(), indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(paths["markdown"], forgetting_markdown(run.report, title))
    if run.report.rows:
        atomic_write_bytes(paths["chart"], forgetting_chart(run.report))
    else:
        del paths["chart"]
    return paths


def eval_markdown(results: Sequence[TaskEvaluation], title: str) -> str:
    lines = [f"# {title}", "", "| task | examples | metric | value | seconds |", "|---|---:|---|---:|---:|"]
    for res in results:
        for metric, value in res.headline().items():
            lines.append(f"| {res.task} | {res.examples} | {metric} | {value:.2f} | {res.seconds:.1f} |")
    return "\n".join(lines) + "\n"


def write_eval_report(results: Sequence[TaskEvaluation], directory: str | Path, title: str, extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """results.json / results.md / results.png under ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md", "chart": out / "results.png"}
    doc = {**(extra or {}), "tasks": [r.to_dict(predictions=True) for r in results]}
    atomic_write_text(paths["json"], json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(paths["markdown"], eval_markdown(results, title))
    labels, values = [], []
    for res in results:
        lower = res.lower_is_better()
        for metric, value in res.headline().items():
            if metric not in lower:
                labels.append(f"{res.task}\n{metric}")
                values.append(value)
    if labels:
        atomic_write_bytes(paths["chart"], _bars_png(labels, {"score": values}, title))
    else:
        del paths["chart"]
    return paths
