"""Catastrophic forgetting: the base and the adapted model on the adapter's own task and
on a held-out suite of other tasks, plus the perplexity of a fixed general-text sample.

For every task and headline metric (0–100, higher is better) a row records base,
adapted, ``delta = adapted - base``, ``n`` and the delta's paired-bootstrap 95 % interval
(both models on the same examples, one resample of example indices for both, the
metric recomputed on each: :mod:`.intervals`). The verdict reads the interval against
``-threshold`` (default 2 points): *forgotten* when it lies wholly below, *unresolved*
when it straddles it, *kept* otherwise; ``flagged`` is *forgotten*. ``resolution`` is the
interval's half-width: at that ``n`` a drop is only called forgotten once it exceeds
about threshold + resolution. Loss-style metrics (lower is better) are not rows; the general-text
perplexity is reported on its own, because the choice of measure changes the
conclusion: an adapter can keep every task score and still drift on plain text.

Defaults: the held-out suite is every other installed task pack; each task uses the
first ``limit`` (20) examples of its seeded test split. The general-text sample is
fixed: the first 24 reference completions of the ``validation`` splits of ``chitchat``
and of ``faq-instruct`` (48 short English texts, conversational and technical),
scored as plain text (no prompt, no chat template). Packs that are not installed are
skipped and the sample notes what it used.

Base outputs and the base's sample perplexity are cached (:mod:`.cache`), so running
this for ten adapters of one base generates the base outputs once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapterhub.errors import EvaluationError, MissingPackageError
from adapterhub.evaluation.intervals import LEVEL, RESAMPLES

if TYPE_CHECKING:
    from adapterhub.evaluation.cache import PredictionCache
    from adapterhub.evaluation.harness import TaskEvaluation
    from adapterhub.evaluation.loading import AdapterSource
    from adapterhub.manifest import ForgettingReport, ForgettingRow
    from adapterhub.protocols.basemodel import LoadedBase
    from adapterhub.protocols.task import TaskPack

DEFAULT_LIMIT = 20
DEFAULT_THRESHOLD = 2.0
SEED = 0
"""Seed of the paired bootstrap: the same outputs always give the same interval."""
SAMPLE_SOURCES: tuple[tuple[str, int], ...] = (("chitchat", 24), ("faq-instruct", 24))
PERPLEXITY_RULE = 1
"""Bumped whenever the perplexity computation changes, so cached base values are not reused."""


@dataclass
class ForgettingRun:
    """The report plus everything behind it (for the JSON/Markdown/PNG report files)."""

    report: ForgettingReport
    own_task: str | None
    base: dict[str, TaskEvaluation] = field(default_factory=dict)
    adapted: dict[str, TaskEvaluation] = field(default_factory=dict)
    adapter: str = ""
    base_name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "adapter": self.adapter,
            "base": self.base_name,
            "own_task": self.own_task,
            "report": self.report.model_dump(mode="json"),
            "tasks": {
                name: {"base": self.base[name].to_dict(predictions=True), "adapted": self.adapted[name].to_dict(predictions=True)}
                for name in self.base
            },
        }


def general_text_sample() -> tuple[list[str], dict[str, Any]]:
    """The fixed general-text sample and a description of it (sources, count, sha256)."""
    from adapterhub.catalog import get_catalog

    cat = get_catalog()
    texts: list[str] = []
    used: list[str] = []
    for task_name, n in SAMPLE_SOURCES:
        if task_name not in cat.tasks:
            continue
        try:
            examples = cat.task(task_name).load("validation")[:n]
        except MissingPackageError:
            continue
        texts += [ex.completion for ex in examples if ex.completion.strip()]
        used.append(f"{task_name}:validation[:{n}]")
    if not texts:
        raise EvaluationError("no general-text sample: neither chitchat nor faq-instruct data is installed")
    digest = hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode("utf-8")).hexdigest()
    return texts, {"sources": used, "texts": len(texts), "sha256": digest}


def compare(task: str, base: TaskEvaluation, adapted: TaskEvaluation, threshold: float, seed: int = SEED) -> list[ForgettingRow]:
    """One row per higher-is-better headline metric of the task, with its paired interval
    when the evaluator gives per-example statistics (else the point delta alone)."""
    from adapterhub.evaluation.intervals import paired_interval, verdict
    from adapterhub.manifest import ForgettingRow

    lower = base.lower_is_better() | adapted.lower_is_better()
    b, a = base.headline(), adapted.headline()
    sb, sa = base.statistics(), adapted.statistics()
    rows = []
    for metric, b_val in b.items():
        if metric in lower or metric not in a:
            continue
        delta = a[metric] - b_val
        if metric in sb and metric in sa and sb[metric].n == sa[metric].n:
            iv = paired_interval(sb[metric], sa[metric], seed=seed)
            v = verdict(iv.low, iv.high, threshold)
            rows.append(ForgettingRow(task=task, metric=metric, base=b_val, adapted=a[metric], delta=delta, flagged=v == "forgotten",
                                      n=iv.n, ci_low=iv.low, ci_high=iv.high, verdict=v, resolution=iv.half_width))
        else:  # a third-party evaluator without statistics: the point delta, as before
            rows.append(ForgettingRow(task=task, metric=metric, base=b_val, adapted=a[metric], delta=delta,
                                      flagged=-delta > threshold, n=base.examples))
    return rows


def default_tasks(own_task: str | None) -> list[str]:
    """The adapter's own task first, then every other installed task pack (sorted)."""
    from adapterhub.catalog import get_catalog

    installed = []
    for name, task in sorted(get_catalog().tasks.items()):
        available = getattr(task, "available", None)
        if callable(available) and not available()[0]:
            continue
        installed.append(name)
    others = [t for t in installed if t != own_task]
    return ([own_task] if own_task else []) + others


def _perplexity(model: Any, tokenizer: Any, texts: Sequence[str]) -> float:
    from adapterhub.evaluation.scoring import resolve_evaluator
    from adapterhub.protocols.evaluator import EvaluatorContext

    evaluator, _ = resolve_evaluator("perplexity")
    ctx = EvaluatorContext(model=model, tokenizer=tokenizer, prompts=[""] * len(texts))
    return float(evaluator.score([""] * len(texts), [[t] for t in texts], ctx).corpus["perplexity"])


def run_forgetting_detailed(
    base: str | LoadedBase | None,
    adapter: str | Path | AdapterSource,
    tasks: Sequence[str | TaskPack] | None = None,
    limit: int | None = DEFAULT_LIMIT,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    cache: PredictionCache | None | bool = True,
    progress: bool = True,
    device: str | None = None,
    registry_url: str | None = None,
    limits: Mapping[str, int] | None = None,
) -> ForgettingRun:
    """Evaluate base and adapted model and build the :class:`ForgettingReport`.

    ``limits`` overrides ``limit`` per task (``--resolve`` sizes each task on its own).
    """
    from adapterhub.evaluation.cache import PredictionCache
    from adapterhub.evaluation.harness import evaluate_task, resolve_tasks
    from adapterhub.evaluation.loading import (
        AdapterSource,
        EvalModels,
        load_base_model,
        resolve_adapter,
    )
    from adapterhub.manifest import ForgettingReport

    if threshold < 0:
        raise EvaluationError(f"threshold must be >= 0 points, got {threshold}")
    source = adapter if isinstance(adapter, AdapterSource) else resolve_adapter(adapter, registry_url)
    own = source.manifest.task
    task_list: list[str | TaskPack] = list(tasks) if tasks else list(default_tasks(own))
    if not task_list:
        raise EvaluationError("no tasks to evaluate: install a task pack or pass --tasks")
    packs = resolve_tasks(task_list)
    if base is None or isinstance(base, str):
        loaded = load_base_model(base or source.manifest.base.name, device)
        owns_base = True
    else:
        loaded, owns_base = base, False  # the caller's model: never wrapped or modified
    models = EvalModels(loaded, source, batch_size=batch_size, owns_base=owns_base)
    store = PredictionCache() if cache is True else (cache or None)
    base_key = {"base_weights_sha256": models.fingerprint.weights_sha256, "architecture": models.fingerprint.architecture}
    sample, sample_info = general_text_sample()

    run = ForgettingRun(report=ForgettingReport(threshold=threshold), own_task=own, adapter=source.label, base_name=loaded.name)
    # 1. the base: task outputs and sample perplexity, from the cache when present
    base_gen = models.base_generator()
    for pack in packs:
        run.base[pack.name] = evaluate_task(
            pack, base_gen, limit=(limits or {}).get(pack.name, limit), max_new_tokens=max_new_tokens, progress=progress,
            cache=store, cache_key=base_key, label="base",
        )
    ppl_key = None
    ppl_base = None
    if store is not None:
        ppl_key = store.key({**base_key, "kind": "perplexity", "rule": PERPLEXITY_RULE, "sample_sha256": sample_info["sha256"]})
        ppl_base = store.get_value(ppl_key)
    if ppl_base is None:
        ppl_base = _perplexity(loaded.model, loaded.tokenizer, sample)
        if store is not None and ppl_key is not None:
            store.put_value(ppl_key, ppl_base, {"kind": "perplexity", **sample_info})
    # 2. the adapted model: sample perplexity on a private copy, then generation
    ppl_adapted = _perplexity(models.adapted_model(), loaded.tokenizer, sample)
    # Free the copy before the host (which may copy the base again) is built; a full
    # fine-tune generates from such a copy and simply loads it once more.
    models.release_adapted_model()
    adapted_gen = models.adapted_generator()
    for pack in packs:
        run.adapted[pack.name] = evaluate_task(
            pack, adapted_gen, limit=(limits or {}).get(pack.name, limit), max_new_tokens=max_new_tokens, progress=progress, label="adapted"
        )
    rows = [row for pack in packs for row in compare(pack.name, run.base[pack.name], run.adapted[pack.name], threshold)]
    run.report = ForgettingReport(
        threshold=threshold,
        rows=rows,
        perplexity_base=ppl_base,
        perplexity_adapted=ppl_adapted,
        interval={"method": "paired-bootstrap", "level": LEVEL, "resamples": RESAMPLES, "seed": SEED,
                  "fallback": "newcombe-paired: proportions whose pairs all agree (the bootstrap would give width 0)"},
        generation={
            "own_task": own,
            "limit": limit,
            "tasks": {
                p.name: {
                    "examples": run.base[p.name].examples,
                    "max_new_tokens": run.base[p.name].max_new_tokens,
                    "data_sha256": run.base[p.name].data_hash,
                    "base_cached": run.base[p.name].cached,
                }
                for p in packs
            },
            "base": {"name": loaded.name, **run.base[packs[0].name].settings},
            "adapted": {"adapter": source.label, **run.adapted[packs[0].name].settings},
            "perplexity_sample": sample_info,
        },
        created=datetime.now(timezone.utc),
    )
    return run


def run_forgetting(
    base: str | LoadedBase | None,
    adapter_dir: str | Path,
    tasks: Sequence[str | TaskPack] | None = None,
    limit: int | None = DEFAULT_LIMIT,
    threshold: float = DEFAULT_THRESHOLD,
    **kwargs: Any,
) -> ForgettingReport:
    """The forgetting report of the adapter in ``adapter_dir`` (or a registry ref).

    ``base`` defaults to the base named in the adapter's manifest. Nothing is written;
    see :func:`save_forgetting` to store the report with the adapter.
    """
    return run_forgetting_detailed(base, adapter_dir, tasks, limit, threshold, **kwargs).report


def save_forgetting(source: AdapterSource, report: ForgettingReport, registry_url: str | None = None) -> str:
    """Store the report with the adapter; returns where it went (for the user).

    An unpublished adapter directory gets it in its manifest (``forgetting``). A
    published registry version is immutable: the report is attached to it as an
    evaluation record (kind ``forgetting``), which ``adapterhub show`` lists.
    """
    if source.ref is None:
        from adapterhub.artifact import update_manifest

        update_manifest(source.directory, forgetting=report)
        return f"manifest of {source.directory}"
    from adapterhub.registry.client import Registry

    record = {"kind": "forgetting", "report": report.model_dump(mode="json")}
    Registry(registry_url).attach_evaluation(source.ref, record)
    return f"evaluation record of {source.ref}"
