"""How much data does an adapter need? Accuracy against training-set size on one task.

On ``sentiment-rt`` with SmolLM2-135M-Instruct: train LoRA and full fine-tuning on the
first 50, 100, 250, 500 and 1,000 examples of the (seeded, shuffled) train split,
evaluate each on a **balanced** held-out set (the first ``--per-label`` reviews of each
label from the fixed, balanced test split), and plot accuracy against examples with the
base model's zero-shot and 5-shot accuracy drawn across. Writes
``benchmarks/results/data_size.{json,md,png}``.

**Steps budget rule** (the same for every run): ``steps = clamp(ceil(epochs * N /
batch), min_steps, max_steps)`` — by default one pass over the data (``--epochs 1``,
batch 8) with a floor of 25 steps (200 example passes: a 50-example set is seen 4
times, 100 twice) and a ceiling of 125 steps (1,000 examples once). The floor keeps the
smallest sets from getting a handful of optimizer steps, which would measure the
warm-up, not the data; the ceiling is what the 45-minute budget at one CPU thread
allows. Learning rates are each method's declared default (LoRA 1e-3, full 1e-5, from
the lr sweep in ``forgetting_mix-lr_sweep.md``), cosine schedule, 5 % warm-up, seed 0.
Every run and baseline uses the same prompt template (``chat-short``: the chat template
with an empty system turn), so only the data differs between points.

Runs are kept in ``WORK/partial.json`` as they finish; a second invocation with the same
``--work`` skips what is done (so the baselines can be added, or a cut-off run resumed).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/data_size.py --threads 1 --work /tmp/ds   # ~45 min
    .venv/bin/python benchmarks/data_size.py --base tiny-random-llama --sizes 8,16 --per-label 4 \\
        --min-steps 2 --max-steps 3 --out /tmp/ds-smoke --work /tmp/ds-smoke                          # smoke
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="smollm2-135m-instruct")
    ap.add_argument("--task", default="sentiment-rt")
    ap.add_argument("--sizes", default="50,100,250,500,1000", help="training-set sizes, comma-separated")
    ap.add_argument("--methods", default="lora,full")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--min-steps", type=int, default=25)
    ap.add_argument("--max-steps", type=int, default=125)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--template", default="chat-short")
    ap.add_argument("--per-label", type=int, default=100, help="held-out reviews per label (balanced eval set)")
    ap.add_argument("--shots", default="0,5", help="few-shot baselines of the base model, comma-separated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work", type=Path, default=None, help="adapters and partial.json (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=None, help="results directory (default: benchmarks/results)")
    ap.add_argument("--render", type=Path, metavar="JSON", help="only rewrite the Markdown and chart of a results JSON")
    return ap.parse_args()


def steps_for(n: int, args: argparse.Namespace) -> int:
    return max(args.min_steps, min(args.max_steps, math.ceil(args.epochs * n / args.batch_size)))


def ci95(acc: float, n: int) -> float:
    """Half-width of the normal-approximation 95 % interval of an accuracy (points)."""
    p = acc / 100.0
    return 196.0 * math.sqrt(max(p * (1 - p), 1e-12) / n) if n else float("nan")


@dataclass
class BalancedTest:
    """A task pack whose test split is the first ``per_label`` examples of each label.

    Other splits pass through, so few-shot examples still come from the real train split.
    """

    inner: Any
    per_label: int

    def __post_init__(self) -> None:
        self.name = self.inner.name
        self.description = self.inner.description
        self.evaluators = self.inner.evaluators
        self.max_new_tokens = self.inner.max_new_tokens
        seen: dict[str, int] = {}
        picked = []
        for ex in self.inner.load("test"):
            if seen.get(ex.completion, 0) < self.per_label:
                seen[ex.completion] = seen.get(ex.completion, 0) + 1
                picked.append(ex)
        self.test = picked
        self.labels = seen

    def load(self, split: str) -> list[Any]:
        return list(self.test) if split == "test" else self.inner.load(split)

    def data_hash(self, split: str) -> str:
        if split != "test":
            return str(self.inner.data_hash(split))
        import hashlib

        h = hashlib.sha256()
        for ex in self.test:
            h.update(json.dumps([ex.prompt, ex.completion]).encode())
        return h.hexdigest()


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from adapterhub.basemodels import load_base
    from adapterhub.catalog import get_catalog
    from adapterhub.evaluation.harness import evaluate_task
    from adapterhub.evaluation.loading import EvalModels, resolve_adapter
    from adapterhub.trainer import train

    work = args.work or Path(tempfile.mkdtemp(prefix="adapterhub-data-size-"))
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "partial.json"
    state: dict[str, Any] = json.loads(state_path.read_text()) if state_path.exists() else {"runs": {}, "baselines": {}}
    state.setdefault("invocations", [])
    done_before = set(state["runs"]) | {f"base-{k}-shot" for k in state["baselines"]}

    def save() -> None:
        state_path.write_text(json.dumps(state, indent=1, default=str), encoding="utf-8")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    base = load_base(args.base, dtype=torch.float32, device=device)
    pack = BalancedTest(get_catalog().task(args.task), args.per_label)
    train_split = pack.load("train")
    print(f"eval set: {len(pack.test)} held-out examples {pack.labels}", file=sys.stderr, flush=True)
    t_all = time.perf_counter()

    def evaluate(label: str, generator: Any, shots: int = 0) -> dict[str, Any]:
        kw: dict[str, Any] = {"shots": shots, "seed": args.seed} if shots else {}
        ev = evaluate_task(pack, generator, progress=False, label=label, **kw)  # type: ignore[arg-type]
        acc = ev.headline()["accuracy"]
        out = {"accuracy": acc, "ci95": ci95(acc, ev.examples), "examples": ev.examples, "seconds": round(ev.seconds, 1),
               **{k: v for k, v in ev.to_dict().items() if k in ("shots", "seed", "prompt_tokens_mean", "shots_dropped", "min_shots")}}
        print(f"   {label}: accuracy {acc:.1f} ±{out['ci95']:.1f} ({ev.seconds:.0f} s)", file=sys.stderr, flush=True)
        return out

    for shots in [int(s) for s in args.shots.split(",") if s.strip()]:
        key = str(shots)
        if key in state["baselines"]:
            continue
        print(f"== base, {shots}-shot", file=sys.stderr, flush=True)
        models = EvalModels(base, None, batch_size=8, template=args.template, owns_base=False)
        state["baselines"][key] = evaluate(f"base {shots}-shot", models.base_generator(), shots)
        save()

    for method in [m for m in args.methods.split(",") if m]:
        for n in [int(s) for s in args.sizes.split(",") if s.strip()]:
            key = f"{method}-{n}"
            if key in state["runs"]:
                continue
            data = train_split[:n]
            steps = steps_for(n, args)
            options: dict[str, Any] = {"steps": steps, "batch_size": args.batch_size, "max_length": args.max_length,
                                       "seed": args.seed, "template": args.template, "overwrite": True, "progress": False}
            print(f"== train {key}: {steps} steps ({steps * args.batch_size / n:.1f} epochs)", file=sys.stderr, flush=True)
            result = train(base, method, {}, data, out_dir=work / key, **options)
            summary = result.as_dict()
            print(f"   {summary['seconds']:.0f} s, loss {summary['initial_loss']:.3f} -> {summary['final_loss']:.3f}, "
                  f"lr {summary['lr']:g} ({summary['lr_source']})", file=sys.stderr, flush=True)
            models = EvalModels(base, resolve_adapter(str(work / key)), batch_size=8, owns_base=False)
            labels = {c: sum(1 for ex in data if ex.completion == c) for c in sorted({ex.completion for ex in data})}
            state["runs"][key] = {"method": method, "examples": n, "labels": labels, "steps": steps,
                                  "epochs": steps * args.batch_size / n, "train": summary,
                                  "eval": evaluate(key, models.adapted_generator())}
            del models
            save()

    did = sorted((set(state["runs"]) | {f"base-{k}-shot" for k in state["baselines"]}) - done_before)
    state["invocations"].append({"command": " ".join(["python", "benchmarks/data_size.py", *sys.argv[1:]]),
                                 "seconds": round(time.perf_counter() - t_all, 1), "computed": did})
    save()
    return {
        "benchmark": "accuracy against training-set size (LoRA and full fine-tuning) beside the base's few-shot accuracy",
        "command": " ".join(["python", "benchmarks/data_size.py", *sys.argv[1:]]),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "steps_rule": f"steps = clamp(ceil({args.epochs:g} * N / {args.batch_size}), {args.min_steps}, {args.max_steps})",
        "eval_set": {"examples": len(pack.test), "labels": pack.labels, "split": "test (balanced, first per label)"},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(), "device": device,
                    "threads": torch.get_num_threads(), "loadavg_at_end": os.getloadavg()},
        "seconds_this_invocation": time.perf_counter() - t_all,
        "invocations": state["invocations"],
        "baselines": state["baselines"],
        "runs": state["runs"],
    }


def markdown(doc: dict[str, Any]) -> str:
    cfg = doc["config"]
    ev = doc["eval_set"]
    lines = [
        "# How much data: accuracy against training examples (sentiment-rt)", "",
        f"Base `{cfg['base']}`, task `{cfg['task']}`; methods {cfg['methods']}, each on the first N examples of the train "
        f"split. Steps rule: `{doc['steps_rule']}` (batch {cfg['batch_size']}, seed {cfg['seed']}, template "
        f"`{cfg['template']}`, each method's default lr). Evaluated on a balanced held-out set of {ev['examples']} test "
        f"reviews ({', '.join(f'{k}: {v}' for k, v in ev['labels'].items())}); greedy decoding, strict first-word accuracy. "
        "± is the half-width of a normal-approximation 95 % interval.", "",
        *[f"Command: `{inv['command']}` ({inv['seconds'] / 60:.0f} min; computed {', '.join(inv['computed']) or 'nothing new'})"
          for inv in doc.get("invocations", [{"command": doc["command"], "seconds": doc["seconds_this_invocation"], "computed": []}])],
        "",
        f"Machine: {doc['machine']['device']}, {doc['machine']['threads']} torch thread(s), {doc['machine']['cpus']} CPUs shared "
        f"with other jobs (load average at the end {', '.join(f'{x:.1f}' for x in doc['machine']['loadavg_at_end'])}).", "",
        "## Base model, k-shot (no training)", "",
        "| shots | accuracy | ± | mean prompt tokens | shots dropped | seconds |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for k, b in sorted(doc["baselines"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {k} | {b['accuracy']:.1f} | {b['ci95']:.1f} | {b.get('prompt_tokens_mean', float('nan')):.0f} | "
                     f"{b.get('shots_dropped', 0)} | {b['seconds']:.0f} |")
    lines += ["", "## Trained", "",
              "| method | examples | labels | steps | epochs | lr | loss first → last | train s | accuracy | ± |",
              "|---|---:|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in sorted(doc["runs"].values(), key=lambda r: (r["method"], r["examples"])):
        t, e = r["train"], r["eval"]
        labels = "/".join(str(v) for v in r["labels"].values())
        lines.append(f"| {r['method']} | {r['examples']} | {labels} | {r['steps']} | {r['epochs']:.1f} | {t['lr']:g} | "
                     f"{t['initial_loss']:.3f} → {t['final_loss']:.3f} | {t['seconds']:.0f} | {e['accuracy']:.1f} | {e['ci95']:.1f} |")
    return "\n".join(lines) + "\n"


def chart(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for method, style in (("lora", "o-"), ("full", "s-")):
        rs = sorted((r for r in doc["runs"].values() if r["method"] == method), key=lambda r: r["examples"])
        if rs:
            ax.errorbar([r["examples"] for r in rs], [r["eval"]["accuracy"] for r in rs], yerr=[r["eval"]["ci95"] for r in rs],
                        fmt=style, capsize=3, label=f"{method} (trained)")
    for (k, b), color in zip(sorted(doc["baselines"].items(), key=lambda kv: int(kv[0])), ("grey", "tab:green", "tab:purple"), strict=False):
        ax.axhline(b["accuracy"], color=color, linestyle="--", label=f"base {k}-shot ({b['accuracy']:.1f})")
    ax.set_xscale("log")
    sizes = sorted({r["examples"] for r in doc["runs"].values()})
    if sizes:
        ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("training examples")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{doc['config']['task']} on {doc['config']['base']}: accuracy vs data")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(doc: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_size.json").write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
    (out / "data_size.md").write_text(markdown(doc), encoding="utf-8")
    chart(doc, out / "data_size.png")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args()
    if args.render is not None:
        doc = json.loads(args.render.read_text(encoding="utf-8"))
        write(doc, args.render.parent)
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    doc = run(args)
    write(doc, args.out or RESULTS)
    print(f"wrote {(args.out or RESULTS) / 'data_size.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
