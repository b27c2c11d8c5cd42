"""Sample adapters for hub tests, screenshots and benchmarks: real pushes, real manifests.

:func:`publish_samples` writes small LoRA adapters (no model needed) that carry what the
hub's pages show — metrics on several tasks, a forgetting report with a drop over the
threshold, a loss curve, a description, tags and two versions of one name — and pushes
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


SAMPLES = (
    Sample("team/sentiment", "1.0.0", "sentiment-rt", "lora", "LoRA r8 on movie-review sentiment (SmolLM2-135M).",
           {"sentiment-rt": {"accuracy": 0.82}, "chitchat": {"rougeL": 0.21}}, (-0.4, -1.1, -6.1, 0.3)),
    Sample("team/sentiment", "1.1.0", "sentiment-rt", "lora", "LoRA r8 on sentiment with a 10 % chitchat mixture against forgetting.",
           {"sentiment-rt": {"accuracy": 0.79}, "chitchat": {"rougeL": 0.24}}, (2.7, -0.6, -0.7, 0.1), tag="stable"),
    Sample("team/summaries", "0.3.0", "aclsum", "lora", "LoRA r4 for abstract summarisation of ACL papers.",
           {"aclsum": {"rougeL": 0.31, "rouge1": 0.42}, "chitchat": {"rougeL": 0.18}}, (-2.2, -0.3, -0.9, 0.0)),
    Sample("ops/faq", "2.0.0", "faq-instruct", "layer-selective", "Construction-site FAQ answers (layer-selective: norms only).",
           {"faq-instruct": {"rougeL": 0.44}, "sentiment-rt": {"accuracy": 0.55}}, (-0.2, 1.5, -3.4, -0.1)),
    Sample("ops/full-baseline", "1.0.0", "sentiment-rt", "full", "Full fine-tuning baseline: every weight trained.",
           {"sentiment-rt": {"accuracy": 0.83}, "chitchat": {"rougeL": 0.12}}, (-9.5, -4.2, -7.8, -1.0)),
)


def _loss_curve(seed: int, steps: int = 120) -> list[float]:
    rng = random.Random(seed)
    return [round(0.6 + 2.4 * math.exp(-i / 25) + rng.uniform(-0.08, 0.08), 4) for i in range(steps)]


def forgetting_report(drops: Sequence[float], threshold: float = 2.0) -> dict[str, Any]:
    rows = []
    for (task, metric), delta in zip(HELD_OUT, drops, strict=True):
        base = 30.0 + len(task)
        rows.append({"task": task, "metric": metric, "base": base, "adapted": round(base + delta, 3),
                     "delta": delta, "flagged": delta < -threshold})
    return {"threshold": threshold, "rows": rows}


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
        forgetting=ForgettingReport.model_validate(forgetting_report(sample.drops)),
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
