"""Report files: JSON, Markdown and a PNG chart, for ``eval`` and for forgetting.

``write_forgetting_report(run, directory)`` writes ``forgetting.json`` (the
:class:`ForgettingReport` plus per-task details and predictions), ``forgetting.md`` (the
table a README can quote) and ``forgetting.png`` (each task's change with its 95 % interval
whisker and verdict). ``write_eval_report`` does the same for a
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
from adapterhub.evaluation.intervals import ci_text

if TYPE_CHECKING:
    from adapterhub.evaluation.forgetting import ForgettingRun
    from adapterhub.evaluation.harness import TaskEvaluation
    from adapterhub.manifest import ForgettingReport, ForgettingRow


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def verdict_text(row: ForgettingRow) -> str:
    """The row's verdict word; a report from before intervals says only whether the
    point drop passed the threshold."""
    if row.verdict is not None:
        return row.verdict
    return "over threshold (no interval)" if row.flagged else ""


def forgetting_table(report: ForgettingReport) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """Header and rows: task, metric, n, base, adapted, delta, its 95 % interval, the
    interval's half-width (the change this n can resolve) and the verdict."""
    own = (report.generation or {}).get("own_task")
    head: tuple[str, ...] = ("task", "metric", "n", "base", "adapted", "delta", "ci95", "±", "verdict")
    body: list[tuple[str, ...]] = [
        (r.task + (" (own)" if r.task == own else ""), r.metric, "-" if r.n is None else str(r.n), f"{r.base:.2f}",
         f"{r.adapted:.2f}", f"{r.delta:+.2f}", ci_text(r.ci_low, r.ci_high, signed=True),
         "-" if r.resolution is None else f"{r.resolution:.1f}", verdict_text(r))
        for r in report.rows
    ]
    return head, body


def forgetting_summary(report: ForgettingReport) -> str:
    """Verdict counts and, for this report's n, the smallest drop it could call forgotten."""
    rows = report.rows
    t = report.threshold
    with_ci = [r for r in rows if r.verdict is not None]
    if not with_ci:
        flagged = sum(r.flagged for r in rows)
        return (f"{flagged} of {len(rows)} task metrics dropped by more than {t:g} points "
                "(point estimates: this report predates intervals).")
    counts = {v: sum(r.verdict == v for r in with_ci) for v in ("forgotten", "unresolved", "kept")}
    held = [r for r in with_ci if r.task != (report.generation or {}).get("own_task")] or with_ci
    widest = max(held, key=lambda r: r.resolution or 0.0)
    finest = min(held, key=lambda r: r.resolution or 0.0)
    flat = sum(1 for r in with_ci if r.resolution == 0)
    caveat = (f" {flat} row(s) show no variation between the models on these examples: a zero-width interval there "
              "is not evidence of precision." if flat else "")
    return (f"{counts['forgotten']} forgotten, {counts['unresolved']} unresolved, {counts['kept']} kept "
            f"(forgotten: the whole 95% interval lies below −{t:g}). At these sample sizes a drop is called "
            f"forgotten only once it exceeds about {t:g} + the interval's half-width: from {t + (finest.resolution or 0):.1f} "
            f"points ({finest.task}, n={finest.n}) to {t + (widest.resolution or 0):.1f} points ({widest.task}, n={widest.n})."
            + caveat)


def forgetting_markdown(report: ForgettingReport, title: str = "Forgetting report") -> str:
    """The report as a Markdown table (task, metric, n, base, adapted, delta, interval, verdict)."""
    gen = report.generation or {}
    lines = [f"# {title}", ""]
    meta = [f"threshold: a task is *forgotten* when the whole 95 % interval of its change lies below −{report.threshold:g} "
            "points (0–100 scale), *unresolved* when the interval straddles it, *kept* otherwise"]
    if gen.get("own_task"):
        meta.append(f"own task: `{gen['own_task']}`")
    if gen.get("limit"):
        meta.append(f"first {gen['limit']} test examples per task (n per row), greedy decoding")
    if report.interval:
        meta.append(f"intervals: {report.interval.get('method')} over the test examples, "
                    f"{report.interval.get('resamples')} resamples, seed {report.interval.get('seed')}")
    head, body = forgetting_table(report)
    lines += [f"- {m}" for m in meta] + ["", "| " + " | ".join(head) + " |", "|---|---|" + "---:|" * 6 + ":---|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
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
    lines += ["", forgetting_summary(report)]
    return "\n".join(lines) + "\n"


def _bars_png(labels: Sequence[str], series: dict[str, Sequence[float]], title: str, flagged: Sequence[bool] | None = None,
              intervals: Sequence[tuple[float, float] | None] | None = None) -> bytes:
    """Grouped bars; ``intervals`` (one series only) become whiskers on the bars."""
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
            if intervals is not None and len(series) == 1:
                for x, v, iv in zip(xs, values, intervals, strict=True):
                    if iv is not None:
                        ax.errorbar(x, v, yerr=[[v - iv[0]], [iv[1] - v]], color="black", capsize=3, linewidth=1)
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


_VERDICT_STYLE = {"forgotten": ("#D55E00", "///"), "unresolved": ("#BBBBBB", ".."), "kept": ("#0072B2", "")}


def forgetting_chart(report: ForgettingReport, title: str = "Change per task (adapted − base), 95 % intervals") -> bytes:
    """Horizontal bars of each delta with its interval as a whisker, the verdict written
    beside it and told apart by hatching too (not by colour alone), −threshold dashed.
    The own task's gain is clipped to the held-out tasks' range with its value printed,
    so a +60 there does not shrink every −2 elsewhere to a sliver."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report.rows
    own = (report.generation or {}).get("own_task")
    ends = [abs(v) for r in rows if r.task != own for v in (r.delta, r.ci_low, r.ci_high) if v is not None]
    lim = max([*ends, report.threshold, 1.0]) * 1.25
    fig, ax = plt.subplots(figsize=(8.0, 0.45 * len(rows) + 1.6), dpi=110)
    try:
        for i, r in enumerate(rows):
            color, hatch = _VERDICT_STYLE.get(r.verdict or "", ("#DDDDDD" if not r.flagged else "#D55E00", ""))
            shown = max(-lim, min(lim, r.delta))
            ax.barh(i, shown, color=color, hatch=hatch, edgecolor="#333333", height=0.6)
            if r.ci_low is not None and r.ci_high is not None:
                lo, hi = max(-lim, r.ci_low), min(lim, r.ci_high)
                ax.plot([lo, hi], [i, i], color="black", linewidth=1.2)
                ax.plot([lo, lo], [i - 0.15, i + 0.15], [hi, hi], [i - 0.15, i + 0.15], color="black", linewidth=1.2)
            note = f"{r.delta:+.1f}" + (" (clipped)" if shown != r.delta else "") + f"  {verdict_text(r)}"
            ax.text(lim * 1.02, i, note, va="center", fontsize=8)
        ax.axvline(0, color="#444444", linewidth=0.8)
        ax.axvline(-report.threshold, color="#D55E00", linestyle="--", linewidth=0.8)
        ax.set_xlim(-lim, lim)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([f"{r.task} · {r.metric}" + (f" (n={r.n})" if r.n else "") for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"points (0–100); dashed: −{report.threshold:g} threshold")
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()
    finally:
        plt.close(fig)


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
    lines = [f"# {title}", "", "| task | n | metric | value | 95% ci | interval | seconds |", "|---|---:|---|---:|---:|---|---:|"]
    for res in results:
        found = res.intervals()
        for metric, value in res.headline().items():
            iv = found.get(metric)
            lines.append(f"| {res.task} | {res.examples} | {metric} | {value:.2f} | {ci_text(iv.low, iv.high) if iv else '-'} | "
                         f"{iv.method if iv else 'none'} | {res.seconds:.1f} |")
    return "\n".join(lines) + "\n"


def write_eval_report(results: Sequence[TaskEvaluation], directory: str | Path, title: str, extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """results.json / results.md / results.png under ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md", "chart": out / "results.png"}
    doc = {**(extra or {}), "tasks": [r.to_dict(predictions=True) for r in results]}
    atomic_write_text(paths["json"], json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(paths["markdown"], eval_markdown(results, title))
    labels, values, whiskers = [], [], []
    for res in results:
        lower = res.lower_is_better()
        found = res.intervals()
        for metric, value in res.headline().items():
            if metric not in lower:
                iv = found.get(metric)
                labels.append(f"{res.task}\n{metric}\nn={res.examples}")
                values.append(value)
                whiskers.append((iv.low, iv.high) if iv is not None else None)
    if labels:
        atomic_write_bytes(paths["chart"], _bars_png(labels, {"score": values}, title + " (95 % intervals)", intervals=whiskers))
    else:
        del paths["chart"]
    return paths
