"""The demo's summary table (stdout) and report directory (Markdown + PNG charts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _headline(metrics: dict[str, float]) -> tuple[str, float]:
    """The metric a table shows per task: accuracy, else ROUGE-L, else the first one."""
    for key in ("accuracy", "rougeL", "bleu", "chrf"):
        if key in metrics:
            return key, metrics[key]
    key = next(iter(metrics))
    return key, metrics[key]


def _with_ci(value: float, found: dict[str, Any] | None) -> str:
    """``90.0 [76.9, 96.0]``: the value and its stored 95 % interval, when there is one."""
    from adapterhub.evaluation.intervals import ci_text

    text = f"{value:.1f}"
    if found and found.get("low") is not None:
        text += " " + ci_text(found["low"], found.get("high"))
    return text


def summary_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = [["adapter", "method", "task", "metric", "n", "base [95% ci]", "adapted [95% ci]", "trainable", "size", "train s", "load ms"]]
    for a in summary["adapters"]:
        metric, adapted = _headline(a["adapted"])
        base = a["base"].get(metric, float("nan"))
        b_iv = (a.get("base_intervals") or {}).get(metric)
        a_iv = (a.get("adapted_intervals") or {}).get(metric)
        n = (a_iv or b_iv or {}).get("n", "-")
        rows.append([
            a["adapter"], a["method"], a["task"], metric, str(n), _with_ci(base, b_iv), _with_ci(adapted, a_iv),
            f"{a['trainable_params']:,}", f"{a['adapter_bytes'] / 1e6:.2f} MB", f"{a['train_seconds']:.0f}",
            f"{summary['serving']['load_ms'].get(a['task'], float('nan')):.1f}",
        ])
    return rows


def forgetting_rows(report: dict[str, Any], headline_only: bool = False) -> list[list[str]]:
    """The forgetting table as the CLI prints it (n, delta, interval, ±, verdict);
    ``headline_only``: one metric per task (accuracy, else ROUGE-L, BLEU, chrF)."""
    from adapterhub.evaluation.report import forgetting_table
    from adapterhub.manifest import ForgettingReport

    parsed = ForgettingReport.model_validate(report)
    if headline_only:
        by_task: dict[str, dict[str, float]] = {}
        for r in parsed.rows:
            by_task.setdefault(r.task, {})[r.metric] = r.delta
        keep = {(t, _headline(m)[0]) for t, m in by_task.items()}
        parsed = parsed.model_copy(update={"rows": [r for r in parsed.rows if (r.task, r.metric) in keep]})
    head, body = forgetting_table(parsed)
    return [list(head), *[list(r) for r in body]]


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _markdown_table(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


def baseline_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Per adapter's task: the base at 0/1/5 shots and the adapter, on the same examples."""
    from adapterhub.evaluation.intervals import ci_text

    rows = [["task", "metric", "n", "model", "shots", "score", "95% ci", "prompt tok"]]
    for a in summary["adapters"]:
        cmp = a.get("baselines")
        if not cmp:
            continue
        for r in cmp["rows"]:
            value = r["metrics"].get(cmp["metric"])
            tokens = r["prompt_tokens_mean"]
            rows.append([
                cmp["task"], cmp["metric"], str(r["examples"]), r["label"].split(" (")[0],
                str(r["shots"]) + (f" (-{r['shots_dropped']})" if r["shots_dropped"] else ""),
                f"{value:.1f}" if value is not None else "-", ci_text(*_bounds(r, cmp["metric"])),
                f"{tokens:.0f}" if tokens is not None else "-",
            ])
    return rows


def _bounds(row: dict[str, Any], metric: str) -> tuple[float | None, float | None]:
    found = (row.get("intervals") or {}).get(metric) or {}
    return found.get("low"), found.get("high")


def print_summary(summary: dict[str, Any]) -> None:
    from adapterhub.evaluation.report import forgetting_summary
    from adapterhub.manifest import ForgettingReport

    print(f"\nadapterhub demo on {summary['base']} ({summary['total_s']:.0f} s)\n")
    print(_table(summary_rows(summary)))
    base_rows = baseline_rows(summary)
    if len(base_rows) > 1:
        print("\nis the adapter worth it? the base with k solved examples in the prompt vs the adapter:")
        print(_table(base_rows))
    print("\nforgetting (adapted − base, points on 0–100, with the paired 95% interval; forgotten = the whole interval "
          "below −threshold, unresolved = it straddles −threshold; one metric per task, all in the report):")
    for a in summary["adapters"]:
        rep = a["forgetting"]
        print(f"  {a['adapter']}:")
        print("    " + _table(forgetting_rows(rep, headline_only=True)).replace("\n", "\n    "))
        print(f"    {forgetting_summary(ForgettingReport.model_validate(rep))}")
        print(f"    general-text perplexity {rep['perplexity_base']:.2f} → {rep['perplexity_adapted']:.2f}")
    print("\nmixed batch on one AdapterHost:")
    for ans in summary["serving"]["answers"]:
        print(f"  [{ans['adapter']}] {ans['prompt'][:60]!r}… → {ans['completion'].strip()[:80]!r}")
    http = summary.get("http") or {}
    if http.get("answers"):
        print("\nthe same over HTTP (OpenAI API, openai client):")
        for ans in http["answers"]:
            how = ", streamed" if ans["streamed"] else ""
            print(f"  [{ans['model']}{how}] {ans['prompt'][:60]!r}… → {ans['completion'].strip()[:80]!r}")
    elif http.get("skipped"):
        print(f"\nover HTTP: skipped ({http['skipped']})")


def _bars(path: Path, labels: list[str], series: dict[str, list[float]], title: str, ylabel: str,
          intervals: dict[str, list[tuple[float, float] | None]] | None = None) -> None:
    """Grouped bars; ``intervals`` (per series, per label) are drawn as whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(labels) + 2), 3.6))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
        ax.bar(xs, values, width, label=name)
        for x, v, iv in zip(xs, values, (intervals or {}).get(name, [None] * len(values)), strict=True):
            if iv is not None:
                ax.errorbar(x, v, yerr=[[v - iv[0]], [iv[1] - v]], color="black", capsize=3, linewidth=1)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _loss_curves(path: Path, curves: dict[str, list[float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, curve in curves.items():
        if curve:
            ax.plot(range(1, len(curve) + 1), curve, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("Loss curves")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _baselines_section(directory: Path, summary: dict[str, Any]) -> list[str]:
    """Markdown and one chart per task: base 0/1/5-shot vs the adapter (``compare-baselines``)."""
    from adapterhub.evaluation.baselines import BaselineRow, Comparison, chart

    rows = baseline_rows(summary)
    if len(rows) == 1:
        return []
    md = ["## Base few-shot vs adapter", "",
          "The base model with 0, 1 and 5 solved training examples before each prompt, next to the adapter (zero-shot), "
          "on the same first test examples (few: these are small samples, see the `95% ci` column). `prompt tok` is the "
          "mean prompt length in tokens, the context the shots cost. Same table as `adapterhub compare-baselines`.", "",
          _markdown_table(rows), ""]
    for a in summary["adapters"]:
        cmp = a.get("baselines")
        if cmp:
            comparison = Comparison(cmp["task"], cmp["base"], cmp["seed"], [BaselineRow(**r) for r in cmp["rows"]], cmp["metric"])
            name = f"baselines-{cmp['task']}.png"
            chart(comparison, directory / name)
            md += [f"![{cmp['task']}: base few-shot vs adapter]({name})", ""]
    return md


def write_report(directory: Path, summary: dict[str, Any], rows: list[dict[str, Any]]) -> Path:
    from adapterhub.evaluation.report import forgetting_summary
    from adapterhub.manifest import ForgettingReport

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _loss_curves(directory / "loss_curves.png", {r["ref"]: r["train"]["loss_curve"] for r in rows})
    labels: list[str] = []
    base_v: list[float] = []
    adapted_v: list[float] = []
    own_ivs: dict[str, list[tuple[float, float] | None]] = {"base": [], "adapted": []}
    for a in summary["adapters"]:
        metric, adapted = _headline(a["adapted"])
        labels.append(f"{a['task']}\n{metric}")
        base_v.append(a["base"].get(metric, 0.0))
        adapted_v.append(adapted)
        for key, field in (("base", "base_intervals"), ("adapted", "adapted_intervals")):
            lo, hi = _bounds({"intervals": a.get(field)}, metric)
            own_ivs[key].append((lo, hi) if lo is not None and hi is not None else None)
    _bars(directory / "base_vs_adapted.png", labels, {"base": base_v, "adapted": adapted_v}, "Own task: base vs adapted (95 % intervals)",
          "score (0–100)", own_ivs)
    f_labels: list[str] = []
    f_series: dict[str, dict[str, float]] = {}
    f_ivs: dict[str, dict[str, tuple[float, float] | None]] = {}
    for a in summary["adapters"]:
        # Held-out tasks only: the own task's gain (often +90 points) would flatten every
        # forgetting bar to nothing; it is charted in base_vs_adapted.png instead.
        held = [r for r in a["forgetting"]["rows"] if r["task"] != a["task"]]
        f_series[a["adapter"]] = {f"{r['task']}/{r['metric']}": r["delta"] for r in held}
        f_ivs[a["adapter"]] = {f"{r['task']}/{r['metric']}": (r["ci_low"], r["ci_high"]) if r.get("ci_low") is not None else None
                               for r in held}
        f_labels.extend(k for k in f_series[a["adapter"]] if k not in f_labels)
    _bars(directory / "forgetting.png", f_labels, {k: [v.get(lbl, 0.0) for lbl in f_labels] for k, v in f_series.items()},
          "Forgetting on held-out tasks: adapted − base (paired 95 % intervals)", "delta (points)",
          {k: [v.get(lbl) for lbl in f_labels] for k, v in f_ivs.items()})
    md = [
        f"# adapterhub demo report ({summary['base']})",
        "",
        f"Total time {summary['total_s']:.0f} s. Every number below was produced by this run.",
        "",
        _markdown_table(summary_rows(summary)),
        "",
        "![loss curves](loss_curves.png)",
        "",
        "![base vs adapted](base_vs_adapted.png)",
        "",
        "`n` is the number of test examples behind a number and `[95% ci]` its 95 % confidence interval (Wilson "
        "for accuracy, a seeded bootstrap over the examples for ROUGE, BLEU and chrF): with a few examples the "
        "intervals are wide, and two numbers whose intervals overlap are not told apart by this run.",
        "",
        "## Forgetting",
        "",
        "Each task's change on the same examples, with its paired-bootstrap 95 % interval: *forgotten* only when the "
        "whole interval lies below −threshold, *unresolved* when it straddles it, *kept* otherwise.",
        "",
    ]
    for a in summary["adapters"]:
        rep = a["forgetting"]
        md += [f"### {a['adapter']}", "", _markdown_table(forgetting_rows(rep)), "",
               forgetting_summary(ForgettingReport.model_validate(rep)), "",
               f"General-text perplexity: {rep['perplexity_base']:.3f} → {rep['perplexity_adapted']:.3f}", ""]
    md += ["![forgetting](forgetting.png)", ""]
    md += _baselines_section(directory, summary)
    md += ["## Mixed batch on one AdapterHost", ""]
    md += [f"- **{a['adapter']}**: {a['prompt'][:100]!r} → {a['completion'].strip()[:200]!r}" for a in summary["serving"]["answers"]]
    (directory / "README.md").write_text("\n".join(md) + "\n")
    return directory
