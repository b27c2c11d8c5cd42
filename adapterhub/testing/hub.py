"""Sample adapters for hub tests, screenshots and benchmarks: real pushes, real manifests.

:func:`publish_samples` writes small LoRA adapters (no model needed) that carry what the
hub's pages show — metrics on several tasks (with ``n`` and intervals), forgetting
reports with paired intervals and each verdict (forgotten, unresolved, kept), an own-task
gain that dwarfs the held-out changes, one report from before intervals, a loss curve, a description, tags and two versions of one name — and pushes
them through :class:`~adapterhub.registry.client.Registry` to any store URL.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapterhub.testing.stores import write_test_adapter

_KINDS = {"full": "full", "layer-selective": "selective"}
# The base the samples claim (a real model's name, so pages and snippets read naturally);
# only its fingerprint is compared, and nothing loads it.
SAMPLE_BASE = {
    "name": "smollm2-135m-instruct",
    "architecture": "LlamaForCausalLM",
    "model_type": "llama",
    "weights_sha256": "5a" * 32,
    "num_parameters": 134_515_008,
    "dtype": "float32",
}
HELD_OUT = (("chitchat", "rougeL"), ("faq-instruct", "rougeL"), ("translate-sv-en", "chrf"), ("aclsum", "rougeL"))


@dataclass(frozen=True)
class Sample:
    name: str
    version: str
    task: str
    method: str
    description: str
    metrics: dict[str, dict[str, float]]
    drops: Sequence[float]  # forgetting delta per HELD_OUT task (negative = forgot)
    tag: str | None = None
    n: int | None = None
    """Examples per task behind the intervals; None: a report (and metrics) from before intervals."""
    own_gain: float | None = None
    """The own task's change, as a first report row (real reports have one)."""


SAMPLES = (
    Sample("team/sentiment", "1.0.0", "sentiment-rt", "lora", "LoRA r8 on movie-review sentiment (SmolLM2-135M).",
           {"sentiment-rt": {"accuracy": 0.82}, "chitchat": {"rougeL": 0.21}}, (-0.4, -1.1, -6.1, 0.3)),
    Sample("team/sentiment", "1.1.0", "sentiment-rt", "lora", "LoRA r8 on sentiment with a 10 % chitchat mixture against forgetting.",
           {"sentiment-rt": {"accuracy": 0.79}, "chitchat": {"rougeL": 0.24}}, (2.7, -0.6, -0.7, 0.1), tag="stable", n=400,
           own_gain=48.0),
    Sample("team/summaries", "0.3.0", "aclsum", "lora", "LoRA r4 for abstract summarisation of ACL papers.",
           {"aclsum": {"rougeL": 0.31, "rouge1": 0.42}, "chitchat": {"rougeL": 0.18}}, (-2.2, -0.3, -0.9, 0.0), n=8),
    Sample("ops/faq", "2.0.0", "faq-instruct", "layer-selective", "Construction-site FAQ answers (layer-selective: norms only).",
           {"faq-instruct": {"rougeL": 0.44}, "sentiment-rt": {"accuracy": 0.55}}, (-0.2, 1.5, -3.4, -0.1), n=200),
    Sample("ops/full-baseline", "1.0.0", "sentiment-rt", "full", "Full fine-tuning baseline: every weight trained.",
           {"sentiment-rt": {"accuracy": 0.83}, "chitchat": {"rougeL": 0.12}}, (-9.5, -4.2, -7.8, -1.0), n=400, own_gain=100.0),
)


def _loss_curve(seed: int, steps: int = 120) -> list[float]:
    rng = random.Random(seed)
    return [round(0.6 + 2.4 * math.exp(-i / 25) + rng.uniform(-0.08, 0.08), 4) for i in range(steps)]


def half_width(n: int) -> float:
    """A plausible 95 % half-width for a paired delta on ``n`` examples (points)."""
    return round(40.0 / math.sqrt(n), 2)


def forgetting_report(drops: Sequence[float], threshold: float = 2.0, n: int | None = None,
                      own: str | None = None, own_gain: float | None = None) -> dict[str, Any]:
    from adapterhub.evaluation.intervals import verdict

    deltas = ([(own, "accuracy", own_gain)] if own and own_gain is not None else []) + [
        (task, metric, delta) for (task, metric), delta in zip(HELD_OUT, drops, strict=True)]
    rows = []
    for task, metric, delta in deltas:
        base = 30.0 + len(task) if task != own else 0.0
        row: dict[str, Any] = {"task": task, "metric": metric, "base": base, "adapted": round(base + delta, 3), "delta": delta,
                               "flagged": delta < -threshold}
        if n is not None:
            hw = half_width(n)
            v = verdict(delta - hw, delta + hw, threshold)
            high = min(delta + hw, 100.0 - base)  # a score cannot pass 100
            row |= {"n": n, "ci_low": delta - hw, "ci_high": high, "verdict": v, "resolution": hw, "flagged": v == "forgotten"}
        rows.append(row)
    out: dict[str, Any] = {"threshold": threshold, "rows": rows}
    if n is not None:
        out |= {"generation": {"own_task": own, "limit": n},
                "interval": {"method": "paired-bootstrap", "level": 0.95, "resamples": 2000, "seed": 0}}
    return out


def metric_intervals(metrics: dict[str, dict[str, float]], n: int) -> dict[str, dict[str, Any]]:
    """Wilson-like bounds around each sample metric (0–1 scale, as the samples store them)."""
    hw = half_width(n) / 100
    return {t: {m: {"n": n, "low": max(0.0, v - hw), "high": min(1.0, v + hw), "method": "wilson"} for m, v in vs.items()}
            for t, vs in metrics.items()}


def write_sample(directory: Path, sample: Sample, seed: int) -> Path:
    from adapterhub.artifact import update_manifest
    from adapterhub.manifest import ForgettingReport, Provenance

    write_test_adapter(directory, seed=seed, task=sample.task, metrics=sample.metrics, base=SAMPLE_BASE)
    # The weights are LoRA-shaped; methods whose config has no LoRA keys (full,
    # layer-selective) accept them with an empty config, which is all the pages need.
    method: dict[str, Any] = {}
    if sample.method != "lora":
        method = {"method": sample.method, "method_kind": _KINDS[sample.method], "method_config": {}}
    update_manifest(
        directory,
        description=sample.description,
        **method,
        forgetting=ForgettingReport.model_validate(forgetting_report(sample.drops, n=sample.n, own=sample.task, own_gain=sample.own_gain)),
        **({"intervals": metric_intervals(sample.metrics, sample.n)} if sample.n else {}),
        provenance=Provenance(task=sample.task, steps=120, num_examples=960, seed=seed, seconds=84.0,
                              hyperparameters={"lr": 1e-3, "batch_size": 8}, loss_curve=_loss_curve(seed)),
    )
    return directory


def publish_samples(url: str, scratch: Path, samples: Sequence[Sample] = SAMPLES, home: Path | None = None) -> list[str]:
    """Push every sample to the store at ``url``; returns the refs, in order."""
    from adapterhub.registry.client import Registry

    reg = Registry(root=home, progress=False)
    refs = []
    for i, s in enumerate(samples):
        d = write_sample(scratch / f"sample{i}", s, seed=i)
        refs.append(reg.publish(d, s.name, version=s.version, tag=s.tag, to=url).ref)
    return refs
