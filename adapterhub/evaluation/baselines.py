"""Is the adapter worth it? One task: the base at 0, 1 and 5 shots beside adapters.

``adapterhub compare-baselines --task T --adapter A [--adapter B] [--base M]`` (and
:func:`compare_baselines`) evaluates, on the same first ``limit`` test examples, the
bare base with K solved train examples before each prompt for every K in ``shots``
(default 0, 1, 5), and each adapter zero-shot (the way it was trained and is served).
Every row shows the task's metric and the mean prompt length in tokens, so a few-shot
gain is seen next to the context it costs. :func:`write_comparison` writes the table as
Markdown and JSON plus a PNG bar chart (matplotlib, Agg). Base outputs come from the
eval cache when the same settings ran before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapterhub.errors import ConfigError

if TYPE_CHECKING:
    from adapterhub.evaluation.harness import TaskEvaluation

DEFAULT_SHOTS = (0, 1, 5)
_PREFERRED = ("accuracy", "rougeL", "bleu", "chrf", "exact_match")


@dataclass(frozen=True)
class BaselineRow:
    """One line of the comparison: a model, how it was prompted, what it scored."""

    label: str
    kind: str
    """``base`` or ``adapter``."""
    shots: int
    metrics: dict[str, float]
    examples: int
    prompt_tokens_mean: float | None
    shots_dropped: int = 0
    seconds: float = 0.0
    cached: bool = False
    intervals: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per metric: ``n`` and the 95 % interval (``TaskEvaluation.interval_records``)."""

    @staticmethod
    def of(evaluation: TaskEvaluation, label: str, kind: str) -> BaselineRow:
        rec = evaluation.shots
        return BaselineRow(
            label=label, kind=kind, shots=int(rec.get("shots", 0)), metrics=evaluation.headline(),
            examples=evaluation.examples, prompt_tokens_mean=evaluation.prompt_tokens_mean,
            shots_dropped=int(rec.get("shots_dropped", 0)), seconds=round(evaluation.seconds, 2), cached=evaluation.cached,
            intervals=evaluation.interval_records(),
        )

    def interval(self, metric: str) -> tuple[float, float] | None:
        found = self.intervals.get(metric) or {}
        low, high = found.get("low"), found.get("high")
        return (float(low), float(high)) if low is not None and high is not None else None


@dataclass
class Comparison:
    task: str
    base: str
    seed: int
    rows: list[BaselineRow]
    metric: str

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "base": self.base, "seed": self.seed, "metric": self.metric,
                "rows": [asdict(r) for r in self.rows]}

    def table(self) -> list[tuple[str, ...]]:
        """Header plus one row per model/prompting, values on the metric's 0–100 scale."""
        from adapterhub.evaluation.intervals import ci_text

        out: list[tuple[str, ...]] = [("model", "shots", self.metric, "ci95", "prompt_tok", "n", "seconds")]
        for r in self.rows:
            value = r.metrics.get(self.metric)
            iv = r.interval(self.metric)
            out.append((
                r.label, str(r.shots) + (f" (-{r.shots_dropped})" if r.shots_dropped else ""),
                f"{value:.1f}" if value is not None else "-", ci_text(*iv) if iv else "-",
                f"{r.prompt_tokens_mean:.0f}" if r.prompt_tokens_mean is not None else "-",
                str(r.examples), f"{r.seconds:.1f}" + (" (cached)" if r.cached else ""),
            ))
        return out

    def markdown(self) -> str:
        head, *body = self.table()
        lines = [
            f"# {self.task}: base few-shot vs adapters ({self.base})", "",
            f"Same first {self.rows[0].examples if self.rows else 0} test examples for every row; shots drawn from the "
            f"train split with seed {self.seed}; adapters zero-shot. `prompt_tok` is the mean prompt length in tokens "
            "(the context the shots cost); `(-n)` after the shots: n shots dropped to fit the context window. "
            "`ci95`: the 95 % interval over the n test examples (Wilson for accuracy-like proportions, a seeded "
            "bootstrap over examples for corpus metrics); two rows whose intervals overlap widely are not told apart "
            "by these examples.", "",
            "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1),
        ]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines) + "\n"


def pick_metric(rows: Sequence[BaselineRow], metric: str | None) -> str:
    names = [k for r in rows for k in r.metrics]
    if metric is not None:
        if metric not in names:
            raise ConfigError(f"metric {metric!r} not among this task's metrics ({', '.join(dict.fromkeys(names))})")
        return metric
    for key in _PREFERRED:
        if key in names:
            return key
    if not names:
        raise ConfigError("the task's evaluators gave no headline metric to compare")
    return names[0]


def compare_baselines(
    base: str | Any,
    task: str,
    adapters: Sequence[str | Path],
    *,
    shots: Sequence[int] = DEFAULT_SHOTS,
    limit: int | None = 50,
    seed: int = 0,
    metric: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    cache: bool = True,
    progress: bool = True,
    device: str | None = None,
    registry_url: str | None = None,
) -> Comparison:
    """The comparison (module docs). ``base`` may be None when an adapter names it."""
    from adapterhub.evaluation.harness import resolve_tasks, run_eval
    from adapterhub.evaluation.loading import load_base_model, resolve_adapter

    if not shots and not adapters:
        raise ConfigError("nothing to compare: give --shots and/or --adapter")
    if any(k < 0 for k in shots):
        raise ConfigError(f"--shots must be 0 or more, got {','.join(map(str, shots))}")
    [pack] = resolve_tasks([task])  # unknown task: one clear error before any model loads
    sources = [resolve_adapter(str(a), registry_url) for a in adapters]
    if base is None:
        if not sources:
            raise ConfigError("give --base (or an --adapter, whose base is used)")
        base = sources[0].manifest.base.name
    loaded = load_base_model(base, device) if isinstance(base, str) else base
    rows: list[BaselineRow] = []
    for k in dict.fromkeys(shots):
        run = run_eval(loaded, [pack], limit=limit, batch_size=batch_size, max_new_tokens=max_new_tokens,
                       cache=cache, progress=progress, shots=k, seed=seed)
        rows.append(BaselineRow.of(run.tasks[0], f"base {k}-shot", "base"))
    for source in sources:
        # The loaded base stays the caller's: each adapter is served on a copy of it.
        run = run_eval(loaded, [pack], adapter=source, limit=limit, batch_size=batch_size,
                       max_new_tokens=max_new_tokens, progress=progress)
        rows.append(BaselineRow.of(run.tasks[0], source.label, "adapter"))
    return Comparison(task=pack.name, base=loaded.name, seed=seed, rows=rows, metric=pick_metric(rows, metric))


def short_label(label: str, width: int = 22) -> str:
    """A row's label for a chart axis: an unpublished adapter's ``name (directory)`` loses
    the directory (the JSON keeps it), and long names wrap so neighbours do not overlap."""
    import textwrap

    name = label.split(" (", 1)[0] if label.endswith(")") else label
    return "\n".join(textwrap.wrap(name, width, break_on_hyphens=False, break_long_words=True)) or name


def chart(comparison: Comparison, path: Path) -> Path:
    """Bars of the metric per row (base k-shot grey to green, adapters blue), prompt tokens under each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = comparison.rows
    values = [r.metrics.get(comparison.metric, 0.0) for r in rows]
    colors = ["#9aa5b1" if r.kind == "base" else "#3b7dd8" for r in rows]
    labels = [short_label(r.label) + "\n" + ", ".join(
        ([f"{r.prompt_tokens_mean:.0f} tok"] if r.prompt_tokens_mean is not None else []) + [f"n={r.examples}"]) for r in rows]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(rows) + 1.5), 3.8))
    whiskers = [r.interval(comparison.metric) for r in rows]
    bars = ax.bar(range(len(rows)), values, color=colors)
    for i, (v, iv) in enumerate(zip(values, whiskers, strict=True)):
        if iv is not None:
            ax.errorbar(i, v, yerr=[[v - iv[0]], [iv[1] - v]], color="black", capsize=3, linewidth=1)
    for bar, v in zip(bars, values, strict=True):
        ax.annotate(f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel(f"{comparison.metric} (0–100), 95 % intervals")
    ax.set_ylim(0, max(100.0, max([v for iv in whiskers if iv for v in iv] + values, default=0.0) * 1.1))
    ax.set_title(f"{comparison.task}: base few-shot vs adapters", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_comparison(comparison: Comparison, directory: Path, stem: str = "baselines") -> dict[str, Path]:
    """``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` in ``directory``."""
    from adapterhub.evaluation.cache import atomic_write_text

    directory.mkdir(parents=True, exist_ok=True)
    files = {"json": directory / f"{stem}.json", "markdown": directory / f"{stem}.md", "chart": directory / f"{stem}.png"}
    atomic_write_text(files["json"], json.dumps(comparison.to_dict(), indent=2) + "\n")
    atomic_write_text(files["markdown"], comparison.markdown() + f"\n![{comparison.task}]({files['chart'].name})\n")
    chart(comparison, files["chart"])
    return files
