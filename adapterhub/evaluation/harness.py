"""The evaluation harness: a task's test split → generations → the task's evaluators.

``evaluate_task(task, generator, limit=...)`` takes the first ``limit`` examples of the
task's (seeded, deterministic) test split, generates greedily in chunks of the
generator's batch size (prompts sorted by length, so a chunk pads little; results are
put back in order), shows a tqdm bar on stderr, and runs every evaluator the task names.
Model-aware evaluators get ``generator.context(prompts)``.

With ``shots=K`` each prompt is preceded by K solved train examples
(:mod:`~adapterhub.evaluation.fewshot`: drawn by ``seed``, dropped rather than the test
input truncated when the context window is short); every task's result says how many
shots, with which seed, how many were dropped and the mean prompt length in tokens.

With a :class:`~adapterhub.evaluation.cache.PredictionCache` and a key, predictions are
read from the cache when present and stored after generation: this is how base-model
outputs are computed once per (base, task, split, settings, limit, shots, seed).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from adapterhub.errors import EvaluationError
from adapterhub.evaluation.scoring import resolve_evaluator

if TYPE_CHECKING:
    from adapterhub.evaluation.cache import PredictionCache
    from adapterhub.evaluation.generation import Generator
    from adapterhub.evaluation.intervals import Interval, Statistic
    from adapterhub.protocols.evaluator import EvalResult
    from adapterhub.protocols.task import Example, Split, TaskPack


@dataclass
class TaskEvaluation:
    """One task's evaluation: what was generated and what every evaluator said."""

    task: str
    split: str
    examples: int
    data_hash: str
    max_new_tokens: int
    predictions: list[str]
    results: list[EvalResult]
    seconds: float
    cached: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    shots: dict[str, Any] = field(default_factory=lambda: {"shots": 0, "seed": None})
    """How the prompts were built: shots, seed, shots_dropped, min_shots,
    prompt_tokens_mean, context_window (:meth:`ShotPlan.record`)."""
    _statistics: dict[str, Statistic] | None = field(default=None, repr=False, compare=False)
    _intervals: dict[str, Interval] | None = field(default=None, repr=False, compare=False)

    @property
    def prompt_tokens_mean(self) -> float | None:
        value = self.shots.get("prompt_tokens_mean")
        return float(value) if value is not None else None

    def headline(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for res in self.results:
            out.update(res.headline)
        return out

    def lower_is_better(self) -> set[str]:
        return {k for res in self.results for k in res.lower_is_better}

    def statistics(self) -> dict[str, Statistic]:
        """Per headline metric, what its interval is resampled from (evaluators that give
        none are absent). Computed once: sacrebleu re-reads the corpus for it."""
        if self._statistics is None:
            self._statistics = {}
            for res in self.results:
                if res.statistics is not None:
                    self._statistics.update({k: v for k, v in res.statistics().items() if k in res.headline})
        return self._statistics

    def intervals(self) -> dict[str, Interval]:
        """Per headline metric, ``n`` and the 95 % interval (Wilson for proportions, the
        seeded bootstrap over examples otherwise); the point value is the evaluator's."""
        from dataclasses import replace

        from adapterhub.evaluation.intervals import interval

        if self._intervals is None:
            head = self.headline()
            self._intervals = {m: replace(interval(stat), value=head[m]) for m, stat in self.statistics().items()}
        return self._intervals

    def interval_records(self) -> dict[str, dict[str, Any]]:
        """Every headline metric's stored interval; a metric without one keeps its ``n``."""
        found = self.intervals()
        return {m: found[m].record() if m in found else {"n": self.examples, "method": "none"} for m in self.headline()}

    def to_dict(self, predictions: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": self.task,
            "split": self.split,
            "examples": self.examples,
            "data_sha256": self.data_hash,
            "max_new_tokens": self.max_new_tokens,
            "seconds": round(self.seconds, 3),
            "cached": self.cached,
            **self.shots,
            "metrics": self.headline(),
            "intervals": self.interval_records(),
            "results": {r.evaluator: r.corpus for r in self.results},
        }
        if predictions:
            out["predictions"] = self.predictions
        return out


def resolve_tasks(tasks: Sequence[str | TaskPack]) -> list[TaskPack]:
    """Task names through the catalog (unknown names fail here, before any model loads);
    TaskPack objects pass through, so code can evaluate an unregistered task."""
    from adapterhub.catalog import get_catalog

    cat = get_catalog()
    return [cat.task(t) if isinstance(t, str) else t for t in tasks]


def select_examples(task: TaskPack, split: Split = "test", limit: int | None = None) -> list[Example]:
    """The first ``limit`` examples of the split: a small, fixed, shuffled subset."""
    examples = task.load(split)
    if limit is not None:
        if limit < 1:
            raise EvaluationError(f"--limit must be at least 1, got {limit}")
        examples = examples[:limit]
    if not examples:
        raise EvaluationError(f"task {task.name!r} has no {split} examples")
    return examples


def generate_all(
    generator: Generator,
    prompts: Sequence[str],
    max_new_tokens: int,
    *,
    desc: str = "",
    progress: bool = True,
    shots: Sequence[Sequence[tuple[str, str]]] | None = None,
    lengths: Sequence[int] | None = None,
) -> list[str]:
    """Generate for every prompt, longest first in chunks, with a progress bar on stderr.

    ``shots`` (per prompt) go to the generator only when given, so any two-argument
    callable still evaluates zero-shot; ``lengths`` (tokens) order the chunks when known.
    """
    from tqdm.auto import tqdm

    chunk = max(1, int(getattr(generator, "batch_size", 8)))
    # Longest first: the slowest chunk runs while the bar's estimate is still honest,
    # and similar lengths share a chunk so left padding stays small.
    size = list(lengths) if lengths is not None else [len(p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -size[i])
    out: list[str | None] = [None] * len(prompts)
    with tqdm(total=len(prompts), desc=desc, unit="ex", file=sys.stderr, disable=not progress or None, leave=False) as bar:
        for start in range(0, len(order), chunk):
            idx = order[start : start + chunk]
            batch = [prompts[i] for i in idx]
            if shots is None:
                completions = generator(batch, max_new_tokens)
            else:
                completions = generator(batch, max_new_tokens, shots=[shots[i] for i in idx])  # type: ignore[call-arg]
            if len(completions) != len(idx):
                raise EvaluationError(f"generator returned {len(completions)} completions for {len(idx)} prompts")
            for i, text in zip(idx, completions, strict=True):
                out[i] = text
            bar.update(len(idx))
    return [t if t is not None else "" for t in out]


def score_predictions(
    task: TaskPack,
    examples: Sequence[Example],
    predictions: Sequence[str],
    generator: Generator | None = None,
    evaluators: Sequence[str] | None = None,
    shots: Sequence[Sequence[tuple[str, str]]] | None = None,
) -> list[EvalResult]:
    """Run the task's evaluators (or ``evaluators``) on the predictions; a model-aware
    one sees the prompts with their ``shots`` when there are any."""
    refs = [ex.refs() for ex in examples]
    prompts = [ex.prompt for ex in examples]
    results = []
    for spec in evaluators or task.evaluators:
        evaluator, options = resolve_evaluator(spec)
        context = None
        if evaluator.needs_model:
            make = getattr(generator, "context", None)
            if not callable(make):
                raise EvaluationError(f"evaluator {evaluator.name!r} of task {task.name!r} needs a model, but the generator exposes none")
            context = make(prompts) if shots is None else make(prompts, shots=shots)
        results.append(evaluator.score(list(predictions), refs, context, **options))
    return results


def evaluate_task(
    task: TaskPack,
    generator: Generator,
    *,
    limit: int | None = None,
    split: Split = "test",
    max_new_tokens: int | None = None,
    evaluators: Sequence[str] | None = None,
    progress: bool = True,
    cache: PredictionCache | None = None,
    cache_key: dict[str, Any] | None = None,
    label: str = "",
    shots: int = 0,
    seed: int = 0,
    context_window: int | None = None,
) -> TaskEvaluation:
    """Evaluate ``generator`` on ``task`` (see module docs); ``shots`` solved train
    examples before each prompt, drawn with ``seed`` (:mod:`adapterhub.evaluation.fewshot`)."""
    from adapterhub.evaluation.fewshot import draw_shots, plan_shots, train_pool

    t0 = time.perf_counter()
    if split == "train" and shots:
        raise EvaluationError("--shots draws from the train split; evaluate on test or validation")
    examples = select_examples(task, split, limit)
    data_hash = task.data_hash(split)
    new_tokens = max_new_tokens or task.max_new_tokens
    settings = dict(getattr(generator, "settings", {}) or {})
    drawn = draw_shots(train_pool(task, shots), examples, shots, seed) if shots else [[] for _ in examples]
    plan = plan_shots(generator, examples, drawn, requested=shots, seed=seed, max_new_tokens=new_tokens, window=context_window)
    key = None
    if cache is not None and cache_key is not None:
        prompt_parts: dict[str, Any] = {"shots": shots}
        if shots:  # what decides the few-shot prompts (the window decides any drops)
            prompt_parts |= {"shot_seed": seed, "train_sha256": task.data_hash("train"), "context_window": plan.window}
        key = cache.key(
            {**cache_key, "task": task.name, "split": split, "data_sha256": data_hash, "limit": len(examples),
             "max_new_tokens": new_tokens, "generation": settings, **prompt_parts}
        )
    predictions = cache.get(key) if (cache is not None and key is not None) else None
    cached = predictions is not None and len(predictions) == len(examples)
    few = plan.shots if shots else None
    if not cached:
        desc = f"{label} {task.name}".strip() + (f" {shots}-shot" if shots else "")
        predictions = generate_all(
            generator, [ex.prompt for ex in examples], new_tokens, desc=desc, progress=progress, shots=few,
            lengths=plan.prompt_tokens if shots else None,  # zero-shot chunks exactly as before
        )
        if cache is not None and key is not None:
            cache.put(key, predictions, {"task": task.name, "split": split, "examples": len(examples), "generation": settings,
                                         **plan.record()})
    assert predictions is not None
    results = score_predictions(task, examples, predictions, generator, evaluators, shots=few)
    return TaskEvaluation(
        task=task.name,
        split=split,
        examples=len(examples),
        data_hash=data_hash,
        max_new_tokens=new_tokens,
        predictions=list(predictions),
        results=results,
        seconds=time.perf_counter() - t0,
        cached=cached,
        settings=settings,
        shots=plan.record(),
    )


@dataclass
class EvalRun:
    """``adapterhub eval`` without ``--forgetting``: one model on several tasks."""

    base: str
    adapter: str | None
    tasks: list[TaskEvaluation]

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "adapter": self.adapter, "tasks": [t.to_dict() for t in self.tasks]}

    def record(self) -> dict[str, Any]:
        """The evaluation record stored with a published adapter: metrics and how they
        were obtained (shots, seed, and per task any dropped shots and prompt length)."""
        first = self.tasks[0].shots if self.tasks else {}
        return {
            "kind": "eval",
            "metrics": self.metrics(),
            "intervals": self.intervals(),
            "shots": first.get("shots", 0),
            "seed": first.get("seed"),
            "tasks": {t.task: {"examples": t.examples, "split": t.split, "data_sha256": t.data_hash, **t.shots} for t in self.tasks},
        }

    def metrics(self) -> dict[str, dict[str, float]]:
        return {t.task: t.headline() for t in self.tasks}

    def intervals(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{task: {metric: {n, low, high, level, method, ...}}}`` (the manifest's ``intervals``)."""
        return {t.task: t.interval_records() for t in self.tasks}


def run_eval(
    base: str | Any,
    tasks: Sequence[str | TaskPack],
    *,
    adapter: Any = None,
    limit: int | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    template: str | None = None,
    cache: PredictionCache | None | bool = True,
    progress: bool = True,
    device: str | None = None,
    registry_url: str | None = None,
    shots: int = 0,
    seed: int = 0,
    context_window: int | None = None,
) -> EvalRun:
    """Evaluate the base (``adapter=None``) or base + adapter on ``tasks``.

    ``base`` is a spec (``smollm2-135m-instruct``, a directory, an HF id) or a
    :class:`LoadedBase`; ``adapter`` a directory, a registry ref or an
    :class:`~adapterhub.evaluation.loading.AdapterSource`. Base outputs are cached.
    """
    from adapterhub.evaluation.cache import PredictionCache
    from adapterhub.evaluation.loading import (
        AdapterSource,
        EvalModels,
        load_base_model,
        resolve_adapter,
    )

    source = None
    if adapter is not None:
        source = adapter if isinstance(adapter, AdapterSource) else resolve_adapter(adapter, registry_url)
    if not tasks:
        raise EvaluationError("no tasks given (--tasks sentiment-rt,summarize-aclsum,...)")
    packs = resolve_tasks(tasks)
    if base is None and source is not None:
        base = source.manifest.base.name
    if base is None:
        raise EvaluationError("--base is required without --adapter")
    owns = isinstance(base, str)
    loaded = load_base_model(base, device) if isinstance(base, str) else base
    models = EvalModels(loaded, source, batch_size=batch_size, template=template, owns_base=owns)
    store = PredictionCache() if cache is True else (cache or None)
    if source is None:
        generator: Any = models.base_generator()
        key: dict[str, Any] | None = {
            "base_weights_sha256": models.fingerprint.weights_sha256,
            "architecture": models.fingerprint.architecture,
        }
        label = "base"
    else:
        needs_model = any(resolve_evaluator(e)[0].needs_model for p in packs for e in p.evaluators)
        generator = models.adapted_generator(with_model_context=needs_model)
        key, store, label = None, None, "adapted"
    results = [
        evaluate_task(
            p, generator, limit=limit, max_new_tokens=max_new_tokens, progress=progress,
            cache=store, cache_key=key, label=label, shots=shots, seed=seed, context_window=context_window,
        )
        for p in packs
    ]
    return EvalRun(base=loaded.name, adapter=source.label if source else None, tasks=results)
