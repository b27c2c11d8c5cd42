"""Real forgetting runs: LoRA vs full fine-tuning on the same budget, on a real base.

For each training task (default ``sentiment-rt`` and ``summarize-aclsum``) this trains
a LoRA adapter and a full fine-tune with the same data, steps, batch size and seed
(only the learning rate differs, each at its usual value), then runs the forgetting
report of each: the base and the tuned model on the own task and on every other
installed task pack (first ``--limit`` test examples each), plus the perplexity of the
fixed general-text sample. Base outputs are generated once (the eval cache).

Writes ``benchmarks/results/forgetting_real.json`` (every report, training summary and
setting) and ``forgetting_real.md`` (a side-by-side table: the own-task gain and the
held-out deltas of each run, flagged drops marked).

    .venv/bin/python benchmarks/forgetting_real.py                       # SmolLM2-135M, CPU: long
    .venv/bin/python benchmarks/forgetting_real.py --steps 60 --limit 10 # a smaller budget
    .venv/bin/python benchmarks/forgetting_real.py --base tiny-random-llama --steps 2 --limit 2  # smoke test

On 2 shared CPU cores the default budget takes hours; every number in the output
carries the settings that made it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="smollm2-135m-instruct")
    ap.add_argument("--train-tasks", default="sentiment-rt,summarize-aclsum")
    ap.add_argument("--methods", default="lora,full")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr-lora", type=float, default=2e-4)
    ap.add_argument("--lr-full", type=float, default=2e-5)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=384)
    ap.add_argument("--max-seconds", type=float, default=None, help="wall-clock cap per training run")
    ap.add_argument("--limit", type=int, default=20, help="test examples per task in the forgetting report")
    ap.add_argument("--threshold", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--work", type=Path, default=None, help="where adapters go (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=RESULTS / "forgetting_real")
    ap.add_argument("--render", type=Path, metavar="JSON", help="only rewrite the Markdown of an existing results JSON")
    return ap.parse_args()


def summarise(name: str, method: str, task: str, train: dict[str, Any], report: Any) -> dict[str, Any]:
    own = [r for r in report.rows if r.task == task]
    held = [r for r in report.rows if r.task != task]
    return {
        "run": name,
        "method": method,
        "task": task,
        "train": train,
        "own_task": {r.metric: {"base": r.base, "adapted": r.adapted, "delta": r.delta} for r in own},
        "held_out_flagged": sum(r.flagged for r in held),
        "held_out_rows": len(held),
        "held_out_mean_delta": (sum(r.delta for r in held) / len(held)) if held else None,
        "perplexity_base": report.perplexity_base,
        "perplexity_adapted": report.perplexity_adapted,
        "report": report.model_dump(mode="json"),
    }


def markdown(doc: dict[str, Any]) -> str:
    runs = doc["runs"]
    cfg = doc["config"]
    lines = [
        "# Forgetting: LoRA vs full fine-tuning on the same budget",
        "",
        f"Base `{cfg['base']}`; up to {cfg['steps']} steps × batch {cfg['batch_size']} per run (seed {cfg['seed']}"
        + (f", at most {cfg['max_seconds']:g} s of training each" if cfg.get("max_seconds") else "")
        + "); "
        f"LoRA r={cfg['lora_r']} lr {cfg['lr_lora']:g}, full lr {cfg['lr_full']:g}; first {cfg['limit']} test examples per task; "
        f"a drop of more than {cfg['threshold']:g} points is flagged (⚠).",
        "",
        f"Command: `{doc['command']}`",
        "",
        "## Summary",
        "",
        "| run | trainable params | steps | train s | own-task metric: base → tuned | held-out flagged | mean held-out delta | general-text perplexity |",
        "|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in runs:
        own = "; ".join(f"{m} {v['base']:.1f} → {v['adapted']:.1f} ({v['delta']:+.1f})" for m, v in r["own_task"].items())
        mean = "–" if r["held_out_mean_delta"] is None else f"{r['held_out_mean_delta']:+.2f}"
        lines.append(
            f"| {r['run']} | {r['train']['trainable_params']:,} | {r['train']['steps']} | {r['train']['seconds']:.0f} | {own} | "
            f"{r['held_out_flagged']}/{r['held_out_rows']} | {mean} | {r['perplexity_base']:.2f} → {r['perplexity_adapted']:.2f} |"
        )
    keys: list[tuple[str, str]] = []
    for r in runs:
        for row in r["report"]["rows"]:
            if (row["task"], row["metric"]) not in keys:
                keys.append((row["task"], row["metric"]))
    lines += ["", "## Per task and metric (tuned score, delta vs base)", "", "| task | metric | base | " + " | ".join(r["run"] for r in runs) + " |",
              "|---|---|---:|" + "---:|" * len(runs)]
    for task, metric in keys:
        base_val = None
        cells = []
        for r in runs:
            row = next((x for x in r["report"]["rows"] if x["task"] == task and x["metric"] == metric), None)
            if row is None:
                cells.append("–")
                continue
            base_val = row["base"]
            flag = " ⚠" if row["flagged"] else ""
            own = " (own)" if task == r["task"] else ""
            cells.append(f"{row['adapted']:.1f} ({row['delta']:+.1f}){flag}{own}")
        lines.append(f"| {task} | {metric} | {'–' if base_val is None else f'{base_val:.1f}'} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    if args.render is not None:
        doc = json.loads(args.render.read_text(encoding="utf-8"))
        args.render.with_suffix(".md").write_text(markdown(doc), encoding="utf-8")
        return
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from adapterhub.basemodels import load_base
    from adapterhub.evaluation.forgetting import run_forgetting_detailed
    from adapterhub.trainer import train

    work = args.work or Path(tempfile.mkdtemp(prefix="adapterhub-forgetting-"))
    base = load_base(args.base, dtype=torch.float32, device="cuda" if torch.cuda.is_available() else "cpu")
    runs = []
    t_all = time.perf_counter()
    for task in [t for t in args.train_tasks.split(",") if t]:
        for method in [m for m in args.methods.split(",") if m]:
            name = f"{method}-{task}"
            out = work / name
            config: dict[str, Any] = {"r": args.lora_r, "alpha": 2 * args.lora_r} if method == "lora" else {}
            options: dict[str, Any] = {
                "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr_lora if method == "lora" else args.lr_full,
                "max_length": args.max_length, "seed": args.seed, "overwrite": True, "max_seconds": args.max_seconds,
            }
            print(f"== train {name}", file=sys.stderr, flush=True)
            result = train(base, method, config, task, out_dir=out, **options)
            print(f"== forgetting {name}", file=sys.stderr, flush=True)
            fr = run_forgetting_detailed(base, out, limit=args.limit, threshold=args.threshold)
            runs.append(summarise(name, method, task, result.as_dict(), fr.report))
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "report"}, default=str), flush=True)
    doc = {
        "benchmark": "forgetting of LoRA vs full fine-tuning on the same budget",
        "command": " ".join(["python", "benchmarks/forgetting_real.py", *sys.argv[1:]]),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                    "device": "cuda" if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads(),
                    "loadavg_at_end": os.getloadavg()},
        "seconds": time.perf_counter() - t_all,
        "runs": runs,
    }
    out_json, out_md = args.out.with_suffix(".json"), args.out.with_suffix(".md")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    out_md.write_text(markdown(doc), encoding="utf-8")
    print(f"wrote {out_json} and {out_md}", file=sys.stderr)


if __name__ == "__main__":
    main()
