"""The demo pipeline (see package docs). Each stage is reused on a re-run unless ``fresh``."""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapterhub.manifest import read_manifest


@dataclass(frozen=True)
class Job:
    """One adapter the demo trains."""

    name: str
    task: str
    method: str
    config: dict[str, Any]
    train: dict[str, Any]
    eval_limit: int
    baseline_limit: int = 4
    """Test examples for the base-few-shot-vs-adapter table (kept small: 5-shot prompts
    are several times longer than zero-shot ones)."""


@dataclass(frozen=True)
class DemoSettings:
    base: str
    jobs: tuple[Job, ...]
    forgetting_limit: int
    forgetting_max_new_tokens: int | None
    mixed_prompts: tuple[tuple[str, str], ...] = field(default=())

    @staticmethod
    def full() -> DemoSettings:
        # Budgets sized for ~15 minutes on 2 CPU cores with the 135M model.
        return DemoSettings(
            base="smollm2-135m-instruct",
            jobs=(
                Job("demo/sentiment-lora", "sentiment-rt", "lora",
                    {"r": 16, "alpha": 32, "target_modules": "all-linear"},
                    {"steps": 60, "batch_size": 8, "lr": 3e-4, "template": "chat-short", "max_length": 160}, 100, 20),
                Job("demo/aclsum-prefix", "summarize-aclsum", "prefix-tuning",
                    {"num_virtual_tokens": 16, "projection": True},
                    {"steps": 40, "batch_size": 4, "lr": 3e-3, "template": "chat-short", "max_length": 384}, 20, 3),
            ),
            forgetting_limit=8,
            forgetting_max_new_tokens=32,
        )

    @staticmethod
    def quick() -> DemoSettings:
        return DemoSettings(
            base="tiny-random-llama",
            jobs=(
                Job("demo/sentiment-lora", "sentiment-rt", "lora", {"r": 4, "alpha": 8},
                    {"steps": 4, "batch_size": 4, "lr": 1e-3, "max_length": 256}, 4, 2),
                Job("demo/aclsum-prefix", "summarize-aclsum", "prefix-tuning", {"num_virtual_tokens": 4},
                    {"steps": 3, "batch_size": 2, "lr": 1e-2, "max_length": 256}, 2, 2),
            ),
            forgetting_limit=2,
            forgetting_max_new_tokens=4,
        )


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _stage(n: int, title: str) -> None:
    _say(f"\n== [{n}/7] {title}")


def run_demo(settings: DemoSettings, out: Path, *, fresh: bool = False, as_json: bool = False) -> dict[str, Any]:
    from adapterhub.basemodels import load_base
    from adapterhub.demo.report import print_summary, write_report
    from adapterhub.registry.client import Registry

    t_start = time.perf_counter()
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    registry = Registry(root=out / "registry")
    _say(f"adapterhub demo: base {settings.base}, output in {out}")
    t0 = time.perf_counter()
    base = load_base(settings.base)
    base_load_s = time.perf_counter() - t0
    _say(f"base model loaded in {base_load_s:.1f} s")

    _stage(1, "zero-shot evaluation of the base model")
    base_evals = {job.task: _eval(base, job.task, None, job.eval_limit) for job in settings.jobs}
    base_metrics = {task: m for task, (m, _) in base_evals.items()}
    for task, (m, ivs) in base_evals.items():
        _say(f"  base on {task}: {_fmt_metrics(m, ivs)}")

    rows: list[dict[str, Any]] = []
    state_file = out / "state.json"
    state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {}
    for job in settings.jobs:
        adir = out / "adapters" / job.name.replace("/", "--")
        _stage(2, f"instruction fine-tuning {job.method} on {job.task}")
        result = _train(base, job, adir)
        _stage(3, f"evaluating {job.name} and its forgetting")
        manifest = read_manifest(adir)
        if job.task in manifest.metrics and manifest.forgetting is not None:
            _say("  reusing the evaluation stored in the manifest (--fresh re-evaluates)")
            adapted, report = dict(manifest.metrics[job.task]), manifest.forgetting
            stored = manifest.intervals.get(job.task, {})
            adapted_ivs = {m: iv.model_dump(exclude_none=True) for m, iv in stored.items()}
        else:
            adapted, adapted_ivs = _eval(base, job.task, adir, job.eval_limit)
            report = _forgetting(base, adir, settings).report
            from adapterhub.artifact import update_manifest

            update_manifest(adir, metrics={job.task: adapted}, intervals={job.task: adapted_ivs}, forgetting=report)
        baselines = _baselines(base, job, adir)
        _stage(4, f"pushing {job.name} to the local registry")
        from adapterhub.artifact import sha256_file

        digest = sha256_file(adir / "manifest.json")
        prior = state.get(job.name, {})
        if prior.get("manifest_sha256") == digest:
            ref = prior["ref"]
            _say(f"  {ref} (already published)")
        else:
            ref = registry.push(adir, job.name, tag="latest")
            state[job.name] = {"ref": ref, "manifest_sha256": digest}
            state_file.write_text(json.dumps(state, indent=2) + "\n")
            _say(f"  {ref}")
        rows.append({"job": job, "dir": adir, "ref": ref, "train": result, "base": base_metrics[job.task],
                     "base_intervals": base_evals[job.task][1], "adapted": adapted, "adapted_intervals": adapted_ivs,
                     "forgetting": report, "baselines": baselines})

    _stage(5, "one AdapterHost, both adapters, one mixed batch")
    from adapterhub.host import AdapterHost

    host = AdapterHost(base)
    serving = _serve(host, registry, rows)

    _stage(6, "the same adapters over HTTP (OpenAI API, the official openai client)")
    from adapterhub.demo.http_stage import http_stage

    questions: list[tuple[str, str | None]] = [(p, a) for p, a in _mixed_prompts(rows)]
    questions.append((questions[0][0], None))  # the bare base, streamed
    http = http_stage(host, questions)

    _stage(7, "summary and report")
    summary = {
        "base": settings.base,
        "base_load_s": round(base_load_s, 2),
        "total_s": round(time.perf_counter() - t_start, 1),
        "adapters": [_row_summary(r) for r in rows],
        "serving": serving,
        "http": http,
    }
    report_dir = write_report(out / "report", summary, rows)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
        print(f"\nreport: {report_dir / 'README.md'}")
    return summary


def _fmt_metrics(m: dict[str, float], intervals: dict[str, dict[str, Any]]) -> str:
    from adapterhub.evaluation.intervals import ci_text

    def one(k: str, v: float) -> str:
        iv = intervals.get(k, {})
        return f"{k} {v:.1f} {ci_text(iv.get('low'), iv.get('high'))} (n={iv.get('n', '?')})"

    return ", ".join(one(k, v) for k, v in m.items())


def _eval(base: Any, task: str, adapter: Path | None, limit: int) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """The task's metrics and, per metric, n and the 95 % interval."""
    from adapterhub.evaluation.harness import run_eval

    run = run_eval(base, [task], adapter=str(adapter) if adapter else None, limit=limit, progress=True)
    return run.metrics()[task], run.intervals()[task]


def _train(base: Any, job: Job, adir: Path) -> dict[str, Any]:
    manifest_file = adir / "manifest.json"
    if manifest_file.exists():
        m = read_manifest(adir)
        _say(f"  reusing {adir} (trained earlier; --fresh retrains)")
        curve = list(m.provenance.loss_curve)
        return {"reused": True, "trainable_params": m.trainable_parameters, "seconds": m.provenance.seconds or 0.0,
                "steps": m.provenance.steps, "loss_curve": curve}
    from adapterhub.trainer import train

    res = train(base, job.method, job.config, job.task, out_dir=adir, name=job.name, **job.train)
    _say(f"  {res.steps} steps in {res.seconds:.0f} s, loss {res.initial_loss:.3f} → {res.final_loss:.3f}, "
         f"{res.trainable_params:,} trainable parameters")
    return {"reused": False, "trainable_params": res.trainable_params, "seconds": res.seconds, "steps": res.steps,
            "loss_curve": list(res.loss_curve)}


def _forgetting(base: Any, adir: Path, settings: DemoSettings) -> Any:
    from adapterhub.evaluation.forgetting import run_forgetting_detailed

    run = run_forgetting_detailed(base, adir, None, settings.forgetting_limit,
                                  max_new_tokens=settings.forgetting_max_new_tokens, progress=True)
    verdicts = ", ".join(f"{r.task}/{r.metric} {r.verdict}" for r in run.report.rows if r.verdict in ("forgotten", "unresolved"))
    _say(f"  forgetting: {len(run.report.rows)} task/metric rows (n={settings.forgetting_limit} each), "
         f"forgotten or unresolved: {verdicts or 'none'}; "
         f"general-text perplexity {run.report.perplexity_base:.2f} → {run.report.perplexity_adapted:.2f}")
    return run


def _baselines(base: Any, job: Job, adir: Path) -> dict[str, Any]:
    """Is the adapter worth it? The base at 0, 1 and 5 shots beside it, on a few examples."""
    from adapterhub.evaluation.baselines import compare_baselines

    t0 = time.perf_counter()
    cmp = compare_baselines(base, job.task, [adir], limit=job.baseline_limit, progress=True)
    cells = ", ".join(f"{r.label.split(' (')[0]} {r.metrics.get(cmp.metric, float('nan')):.1f}" for r in cmp.rows)
    _say(f"  base few-shot vs adapter ({cmp.metric}, {job.baseline_limit} examples, {time.perf_counter() - t0:.0f} s): {cells}")
    return cmp.to_dict()


def _serve(host: Any, registry: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    loads = {}
    for r in rows:
        entry = host.load(registry.pull(r["ref"]), name=r["job"].name)
        loads[r["job"].task] = round(entry.swap_ms, 2)
    prompts = _mixed_prompts(rows)
    t0 = time.perf_counter()
    gens = host.generate([p for p, _ in prompts], [a for _, a in prompts], max_new_tokens=40)
    batch_s = time.perf_counter() - t0
    answers = []
    for g in gens:
        _say(f"  [{g.adapter}] {g.prompt[:70]!r}…\n      → {g.completion.strip()[:200]!r}")
        answers.append({"prompt": g.prompt, "adapter": g.adapter, "completion": g.completion})
    return {"load_ms": loads, "mixed_batch_s": round(batch_s, 2), "answers": answers,
            "pool": host.adapters()}


def _mixed_prompts(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    from adapterhub.catalog import get_catalog

    out = []
    for r in rows:
        ex = get_catalog().task(r["job"].task).load("test")[0]
        out.append((ex.prompt, r["job"].name))
    return out


def _row_summary(r: dict[str, Any]) -> dict[str, Any]:
    adir: Path = r["dir"]
    size = (adir / "adapter.safetensors").stat().st_size
    return {
        "adapter": r["ref"],
        "task": r["job"].task,
        "method": r["job"].method,
        "trainable_params": r["train"]["trainable_params"],
        "adapter_bytes": size,
        "train_seconds": round(r["train"]["seconds"], 1),
        "steps": r["train"]["steps"],
        "base": r["base"],
        "base_intervals": r["base_intervals"],
        "adapted": r["adapted"],
        "adapted_intervals": r["adapted_intervals"],
        "forgetting": r["forgetting"].model_dump(mode="json"),
        "baselines": r["baselines"],
    }
