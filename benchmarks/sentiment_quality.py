"""sentiment-rt quality within a CPU time budget: base zero-shot vs each method.

    .venv/bin/python benchmarks/sentiment_quality.py [--budget 600] [--methods lora,prefix-tuning,layer-selective,full]

On ``smollm2-135m-instruct`` (float32, CPU, ``--threads`` torch threads):

1. the base model's zero-shot **greedy** accuracy on the fixed, balanced 500-review test
   split (250 positive / 250 negative), with the task's plain classification prompt and
   the tokenizer's chat template (and, for reference, the ``chat-short`` template). The
   strict score (first word of 4 greedy tokens) is what adapters are held to; the base
   model tends to answer "The sentiment of this review is positive", so two lenient
   base-only scores are added: the label named within 12 greedy tokens, and the label
   whose tokens have the higher log-probability;
2. for each method, training on the ``train`` split within ``--budget`` seconds of
   wall-clock time — counted from the start of data loading, so tokenisation, the
   fingerprint and a 3-step speed calibration (used to size the cosine schedule to the
   budget) are all inside it — then greedy accuracy of the adapted model on the same
   500 reviews with the template it was trained with.

``--clock cpu`` measures the budget in this process's CPU time on one thread instead
(see ``CPU_SCALING``): on a shared, oversubscribed machine wall-clock time mostly
measures the neighbours, while CPU time still measures the work. The results say which
clock was used.

Each method runs in its own process on a freshly loaded base. Generation is batched
(length-sorted, left-padded ``model.generate``, greedy, 4 new tokens) and scored with
the ``accuracy`` evaluator (first word, case- and punctuation-insensitive). Writes
``benchmarks/results/sentiment_quality.{json,md}``; rows from earlier runs of other
methods are kept, so methods can be (re)run one at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
TASK = "sentiment-rt"

# Chosen for a 10-minute, 2-core budget (see docs/training.md for the reasoning).
PRESETS: dict[str, dict[str, Any]] = {
    "lora": {
        "config": {"r": 16, "alpha": 32, "target_modules": "all-linear"},
        "train": {"lr": 1e-3, "batch_size": 16, "warmup": 10},
    },
    "prefix-tuning": {
        "config": {"num_virtual_tokens": 20},
        "train": {"lr": 1e-2, "batch_size": 16, "warmup": 10},
    },
    "layer-selective": {
        "config": {"layers": "20-29"},
        "train": {"lr": 1e-4, "batch_size": 16, "warmup": 10},
    },
    "full": {
        "config": {"restorable": False},
        "train": {"lr": 5e-5, "batch_size": 16, "warmup": 10},
    },
}


CPU_SCALING = 0.9
"""In ``--clock cpu`` mode one thread may use ``budget × cores × 0.9`` CPU seconds: two
threads on two idle cores do a step ~1.8× faster than one thread, so this is the same
amount of work as ``budget`` wall seconds on two dedicated cores, without counting time
the process spent waiting for a CPU on a shared machine."""


class Budget:
    """A time budget on the wall clock, or on this process's CPU time (see CPU_SCALING)."""

    def __init__(self, limit: float, clock: str) -> None:
        self.clock, self.limit = clock, limit
        self.wall0 = time.perf_counter()
        self.t0 = self.now()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Budget:
        if args.clock == "cpu":
            return cls(args.budget * args.cores * CPU_SCALING, "cpu")
        return cls(args.budget, "wall")

    def now(self) -> float:
        return time.process_time() if self.clock == "cpu" else time.perf_counter()

    def used(self) -> float:
        return self.now() - self.t0

    def left(self) -> float:
        return self.limit - self.used()


def greedy_accuracy(model: Any, tokenizer: Any, examples: list[Any], template: str, batch_size: int = 32) -> tuple[float, float, list[str]]:
    """(accuracy 0-100, seconds, predictions) with length-sorted batched greedy decoding."""
    from adapterhub.catalog import get_catalog
    from adapterhub.evaluation.generation import ModelGenerator

    gen = ModelGenerator(model, tokenizer, template=template, batch_size=batch_size)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].prompt))
    t0 = time.perf_counter()
    preds_sorted = gen([examples[i].prompt for i in order], max_new_tokens=4)
    seconds = time.perf_counter() - t0
    preds = [""] * len(examples)
    for i, p in zip(order, preds_sorted, strict=True):
        preds[i] = p
    res = get_catalog().evaluator("accuracy").score(preds, [list(e.refs()) for e in examples])
    return float(res.headline["accuracy"]), seconds, preds


def _load() -> Any:
    from adapterhub.basemodels import load_base

    return load_base("smollm2-135m-instruct")


def lenient_accuracy(preds: list[str], examples: list[Any]) -> float:
    """Share of outputs that name the gold label and not the other ("The review is positive")."""
    import re

    ok = 0
    for p, e in zip(preds, examples, strict=True):
        words = set(re.findall(r"[a-z]+", p.lower()))
        other = "negative" if e.completion == "positive" else "positive"
        ok += e.completion in words and other not in words
    return 100.0 * ok / len(examples)


def logprob_accuracy(model: Any, tokenizer: Any, examples: list[Any], template: str, batch_size: int = 32) -> float:
    """Pick the label whose completion tokens have the higher log-probability after the prompt."""
    import torch

    from adapterhub.trainer.templates import format_prompt

    labels = ["positive", "negative"]
    label_ids = [tokenizer(lab, add_special_tokens=False)["input_ids"] for lab in labels]
    correct = 0
    model.eval()
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        scores = []
        for ids in label_ids:
            rows = [tokenizer(format_prompt(tokenizer, e.prompt, template), add_special_tokens=False)["input_ids"] + ids for e in chunk]
            width = max(len(r) for r in rows)
            pad = tokenizer.pad_token_id or 0
            x = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
            with torch.no_grad():
                logp = model(input_ids=x, attention_mask=mask).logits.float().log_softmax(-1)
            n = len(ids)
            tgt = x[:, -n:]
            scores.append(logp[:, -n - 1 : -1].gather(-1, tgt.unsqueeze(-1)).squeeze(-1).sum(-1))
        pick = torch.stack(scores).argmax(0)
        correct += sum(labels[int(i)] == e.completion for i, e in zip(pick, chunk, strict=True))
    return 100.0 * correct / len(examples)


def run_base(args: argparse.Namespace) -> list[dict[str, Any]]:
    from adapterhub.catalog import get_catalog
    from adapterhub.evaluation.generation import ModelGenerator

    base = _load()
    test = get_catalog().task(TASK).load("test")[: args.test_limit]
    rows = []
    for template in ("chat", "chat-short"):
        acc, secs, preds = greedy_accuracy(base.model, base.tokenizer, test, template)
        row = {"method": "base (zero-shot)", "template": template, "accuracy": acc, "eval_seconds": secs,
               "n_test": len(test), "sample_predictions": preds[:5]}
        if template == "chat":
            # The strict score counts "The review is positive" as wrong; these two show
            # what the base model knows (the issue quotes 54.5 % / 68.5 % on 200 reviews).
            gen = ModelGenerator(base.model, base.tokenizer, template=template, batch_size=32)
            long_preds = gen([e.prompt for e in test], max_new_tokens=12)
            row["lenient_accuracy_12_tokens"] = lenient_accuracy(long_preds, test)
            row["logprob_accuracy"] = logprob_accuracy(base.model, base.tokenizer, test, template)
        rows.append(row)
        print(f"base zero-shot [{template}]: {acc:.1f}% ({secs:.0f} s) {row.get('lenient_accuracy_12_tokens', '')} {row.get('logprob_accuracy', '')}", file=sys.stderr)
    return rows


def run_method(method: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from adapterhub.catalog import get_catalog
    from adapterhub.trainer.data import TrainingData, load_data, tokenize_examples
    from adapterhub.trainer.loop import train

    preset = PRESETS[method]
    base = _load()
    budget = Budget.from_args(args)  # starts now: data, calibration and training count
    data = load_data(TASK)
    hyper = {**preset["train"], "template": args.template, "max_length": 128, "seed": 0, "progress": not args.quiet}
    # Speed calibration (4 steps on a 300-example slice, discarded) sizes the cosine
    # schedule to the budget; the first step (allocator warm-up) is not counted.
    sample = TrainingData(data.examples[:300], data.sha256, data.source, data.task, data.split_seed)
    marks: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        train(base, method, preset["config"], sample, out_dir=Path(tmp) / "cal", steps=4,
              callbacks=[lambda info: marks.append(budget.now())], **{**hyper, "progress": False})
    if method == "full":  # restorable=False leaves the calibration's weights behind
        del base
        base = _load()
    per_step = (marks[-1] - marks[0]) / (len(marks) - 1)
    overhead = 20.0  # fingerprint, tokenisation, artifact write
    steps = max(10, int((budget.left() - overhead) / per_step))
    out = Path(args.out_dir) / f"sentiment-{method}"
    res = train(base, method, preset["config"], data, out_dir=out, steps=steps, overwrite=True, keep_attached=True,
                callbacks=[lambda info: budget.left() <= overhead / 4], **hyper)
    wall = time.perf_counter() - budget.wall0
    used = budget.used()  # before the evaluation, which is not part of the budget
    test = get_catalog().task(TASK).load("test")[: args.test_limit]
    toks = tokenize_examples(data.examples[:2000], base.tokenizer, max_length=128, template=args.template)
    acc, secs, preds = greedy_accuracy(base.model, base.tokenizer, test, args.template)
    row = {
        "method": method,
        "config": preset["config"],
        "hyperparameters": {k: v for k, v in hyper.items() if k != "progress"},
        "template": args.template,
        "steps": res.steps,
        "planned_steps": steps,
        "examples_seen": res.steps * hyper["batch_size"],
        "train_seconds": res.seconds,
        "budget_wall_seconds": wall,
        "budget_clock": budget.clock,
        "budget_limit_seconds": budget.limit,
        "budget_used_seconds": used,
        "trainable_params": res.trainable_params,
        "initial_loss": res.initial_loss,
        "final_loss": res.final_loss,
        "tokens_per_second": res.tokens_per_second,
        "mean_tokens_per_example": sum(len(t) for t in toks) / len(toks),
        "accuracy": acc,
        "eval_seconds": secs,
        "n_test": len(test),
        "adapter_dir": str(out),
        "sample_predictions": preds[:5],
        "threads": torch.get_num_threads(),
    }
    print(f"{method}: {acc:.1f}% after {res.steps} steps / {wall:.0f} s", file=sys.stderr)
    return row


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# sentiment-rt: greedy accuracy on the balanced 500-review test set",
        "",
        "| model | template | trainable params | steps (examples) | budget | wall (s) | accuracy (%) |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        if r["method"].startswith("base"):
            extra = ""
            if "logprob_accuracy" in r:
                extra = (f" (names the right label within 12 tokens: {r['lenient_accuracy_12_tokens']:.1f}; "
                         f"label log-probability: {r['logprob_accuracy']:.1f})")
            lines.append(f"| {r['method']} | {r['template']} | 0 | – | – | – | {r['accuracy']:.1f}{extra} |")
        else:
            clock = r.get("budget_clock", "wall")
            spent = f"{r['budget_used_seconds']:.0f} of {r['budget_limit_seconds']:.0f} {clock} s, {r['threads']} thread(s)"
            lines.append(
                f"| {r['method']} | {r['template']} | {r['trainable_params']:,} | {r['steps']} ({r['examples_seen']}) "
                f"| {spent} | {r['budget_wall_seconds']:.0f} | {r['accuracy']:.1f} |"
            )
    lines += ["", f"Budget per method: {meta['budget']:.0f} s of wall clock on {meta['threads']} threads (`--clock wall`), or "
              f"{meta['budget']:.0f} s × 2 cores × {CPU_SCALING} of one thread's CPU time (`--clock cpu`), counting data loading, "
              f"calibration and training. {meta['cpus_online']} CPUs, load average {meta['loadavg'][0]:.1f} at the end "
              "(a shared machine: more load means fewer steps in the same budget).", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=600.0, help="seconds per method")
    ap.add_argument("--methods", default="lora,prefix-tuning,layer-selective,full")
    ap.add_argument("--skip-base", action="store_true")
    ap.add_argument("--template", default="chat-short")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="budget on the wall clock (default), or on process CPU time with 1 thread (shared machines)")
    ap.add_argument("--cores", type=int, default=2, help="cores the budget stands for (--clock cpu)")
    ap.add_argument("--test-limit", type=int, default=500)
    ap.add_argument("--out-dir", default=str(ROOT / "results" / "adapters"))
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    if args.clock == "cpu":
        args.threads = 1  # CPU time of one thread is work done; spinning threads would bill idle time
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(run_base(args) if args.worker == "base" else [run_method(args.worker, args)]))
        return

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "sentiment_quality.json"
    previous = json.loads(path.read_text())["rows"] if path.exists() else []
    jobs = ([] if args.skip_base else ["base"]) + [m for m in args.methods.split(",") if m]
    rows: list[dict[str, Any]] = []
    for job in jobs:
        cmd = [sys.executable, __file__, "--worker", job, *sys.argv[1:]]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{job} failed (exit {proc.returncode})")
        rows += json.loads(proc.stdout.strip().splitlines()[-1])
    def key(r: dict[str, Any]) -> tuple[str, str, str]:
        return r["method"], r["template"], r.get("budget_clock", "")

    done = {key(r) for r in rows}
    merged = [r for r in previous if key(r) not in done] + rows
    merged.sort(key=lambda r: (not r["method"].startswith("base"), r["method"]))
    meta = {"budget": args.budget, "clock": args.clock, "cores": args.cores, "threads": args.threads, "cpus_online": os.cpu_count(), "loadavg": os.getloadavg(),
            "cpu": platform.machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    path.write_text(json.dumps({"meta": meta, "rows": merged}, indent=2) + "\n")
    md = render(merged, meta)
    (RESULTS / "sentiment_quality.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
