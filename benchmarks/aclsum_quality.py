"""summarize-aclsum: an adapter trained within 15 CPU minutes vs the first-sentence baseline.

    .venv/bin/python benchmarks/aclsum_quality.py [--budget 900] [--method lora]

On ``smollm2-135m-instruct`` (float32, CPU): ROUGE-L F1 (rouge-score, stemming) on the
package's test split (100 papers, challenge-aspect summaries) for

1. the extractive baseline: the abstract's first sentence (0.216 on the first 20 test
   papers in the issue; the full split is reported too);
2. the base model zero-shot (greedy, the pack's 64 new tokens);
3. an adapter trained within ``--budget`` seconds of wall clock (or ``--clock cpu``, as in
   ``sentiment_quality.py``) (data loading, a speed
   calibration and training, with held-out loss on the validation split every
   ``--eval-every`` steps and early stopping), decoded greedily the same way.

Writes ``benchmarks/results/aclsum_quality.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from sentiment_quality import Budget  # the benchmarks directory is sys.path[0]

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
TASK = "summarize-aclsum"
PRESETS: dict[str, dict[str, Any]] = {
    "lora": {"config": {"r": 16, "alpha": 32, "target_modules": "all-linear"}, "lr": 5e-4},
    "prefix-tuning": {"config": {"num_virtual_tokens": 20}, "lr": 1e-2},
    "layer-selective": {"config": {"layers": "20-29"}, "lr": 5e-5},
    "full": {"config": {"restorable": False}, "lr": 2e-5},
}


def rouge_l(preds: list[str], examples: list[Any]) -> float:
    from adapterhub.catalog import get_catalog

    res = get_catalog().evaluator("rouge").score(preds, [list(e.refs()) for e in examples])
    return float(res.corpus["rougeL"]["fmeasure"])


def generate(model: Any, tokenizer: Any, examples: list[Any], template: str, max_new_tokens: int) -> tuple[list[str], float]:
    from adapterhub.evaluation.generation import ModelGenerator

    gen = ModelGenerator(model, tokenizer, template=template, batch_size=10)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].prompt))
    t0 = time.perf_counter()
    out = gen([examples[i].prompt for i in order], max_new_tokens=max_new_tokens)
    preds = [""] * len(examples)
    for i, p in zip(order, out, strict=True):
        preds[i] = p.strip()
    return preds, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=900.0)
    ap.add_argument("--method", default="lora", choices=sorted(PRESETS))
    ap.add_argument("--template", default="chat-short")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="see sentiment_quality.py")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--skip-base", action="store_true", help="do not regenerate the base model's zero-shot outputs")
    ap.add_argument("--out-dir", default=str(RESULTS / "adapters"))
    args = ap.parse_args()

    import torch

    if args.clock == "cpu":
        args.threads = 1
    torch.set_num_threads(args.threads)
    from adapterhub.plugins.tasks.summarize_aclsum import first_sentence_baseline

    from adapterhub.basemodels import load_base
    from adapterhub.catalog import get_catalog
    from adapterhub.trainer.data import TrainingData, load_data
    from adapterhub.trainer.loop import train

    pack = get_catalog().task(TASK)
    test = pack.load("test")
    rows: list[dict[str, Any]] = []
    first = [first_sentence_baseline(e) for e in test]
    rows.append({"system": "first sentence of the abstract", "rougeL": rouge_l(first, test),
                 "rougeL_first20": rouge_l(first[:20], test[:20])})

    base = load_base("smollm2-135m-instruct")
    path = RESULTS / "aclsum_quality.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    if args.skip_base and previous.get("base_row"):
        base_row = previous["base_row"]
    else:
        preds, secs = generate(base.model, base.tokenizer, test, "chat", pack.max_new_tokens)
        base_row = {"system": "base zero-shot (chat template)", "rougeL": rouge_l(preds, test),
                    "rougeL_first20": rouge_l(preds[:20], test[:20]), "eval_seconds": secs, "sample": preds[:3]}
    rows.append(base_row)

    preset = PRESETS[args.method]
    hyper = {"lr": preset["lr"], "batch_size": args.batch_size, "warmup": 5, "template": args.template,
             "max_length": 512, "seed": 0, "eval_every": args.eval_every, "early_stopping_patience": 3, "eval_size": 50}
    budget = Budget.from_args(args)
    data = load_data(TASK)
    marks: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        sample = TrainingData(data.examples[:40], data.sha256, data.source, data.task, data.split_seed)
        train(base, args.method, preset["config"], sample, out_dir=Path(tmp) / "cal", steps=3, progress=False,
              callbacks=[lambda info: marks.append(budget.now())], **{k: v for k, v in hyper.items() if not k.startswith(("eval", "early"))})
    if args.method == "full":
        base = load_base("smollm2-135m-instruct")
    per_step = (marks[-1] - marks[0]) / (len(marks) - 1)
    # Each evaluation costs about as much as 50/batch forward passes: budget for them.
    eval_cost = per_step * 0.4 * 50 / args.batch_size
    steps = max(10, int((budget.left() - 20) / (per_step + eval_cost / args.eval_every)))
    out = Path(args.out_dir) / f"aclsum-{args.method}"
    res = train(base, args.method, preset["config"], data, out_dir=out, steps=steps, overwrite=True, keep_attached=True,
                callbacks=[lambda info: budget.left() <= 5], **hyper)
    wall = time.perf_counter() - budget.wall0
    used = budget.used()  # before the evaluation, which is not part of the budget
    preds, secs = generate(base.model, base.tokenizer, test, args.template, pack.max_new_tokens)
    rows.append({
        "system": f"{args.method} adapter ({args.template} template)",
        "rougeL": rouge_l(preds, test), "rougeL_first20": rouge_l(preds[:20], test[:20]),
        "steps": res.steps, "planned_steps": steps, "stopped_early": res.stopped_early,
        "budget_wall_seconds": wall, "budget_clock": budget.clock, "budget_limit_seconds": budget.limit,
        "budget_used_seconds": used, "train_seconds": res.seconds, "eval_losses": res.eval_losses,
        "trainable_params": res.trainable_params, "config": preset["config"], "hyperparameters": hyper,
        "eval_seconds": secs, "sample": preds[:3], "adapter_dir": str(out),
    })
    meta = {"budget": args.budget, "clock": args.clock, "cores": args.cores, "threads": args.threads, "loadavg": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "test_items": len(test)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "rows": rows, "base_row": base_row}, indent=2) + "\n")
    lines = ["# summarize-aclsum: ROUGE-L F1 on the test split (challenge summaries)", "",
             "| system | ROUGE-L (100 test papers) | ROUGE-L (first 20) | notes |", "|---|---:|---:|---|"]
    for r in rows:
        note = (f"{r['steps']} steps, {r['budget_used_seconds']:.0f} of {r['budget_limit_seconds']:.0f} {r['budget_clock']} seconds"
                if "steps" in r else "")
        lines.append(f"| {r['system']} | {r['rougeL']:.3f} | {r['rougeL_first20']:.3f} | {note} |")
    lines += ["", f"Greedy decoding, {pack.max_new_tokens} new tokens; {args.threads} torch threads; load average "
              f"{meta['loadavg'][0]:.1f} at the end (shared machine).", ""]
    (RESULTS / "aclsum_quality.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
