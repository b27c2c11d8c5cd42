"""One training step per method, and peak RSS, side by side with ``peft`` in one run.

    .venv/bin/python benchmarks/train_step.py [--repeats 5] [--threads 2] [--quick]

Every case runs in a fresh subprocess (so ``ru_maxrss`` is that case's own peak) on the
same model — SmolLM2-135M-Instruct, the packaged model, in float32 on CPU — and the same
batch: 4 sequences × 128 tokens, seeded random token ids, an instruction-style split of
96 prompt tokens and 32 completion tokens with the loss on the completion only (what
``adapterhub train`` optimises). One step = zero_grad, forward, loss, backward, gradient
clipping (1.0), AdamW step. One warm-up step, then the median of ``--repeats`` steps;
``--rounds`` passes over all cases in alternating order, keeping each case's best round.

Cases:

==================== ======================================================================
adapterhub-<method>   the trainer's own step (``adapterhub.trainer.loop`` loss function:
                      logits only at completion positions) on ``method.attach`` (LoRA r=8
                      on q/v; prefix tuning 20 tokens; layer-selective layers 20-29; full)
adapterhub-lora-gc    the same LoRA step with ``--gradient-checkpointing`` (non-reentrant)
peft-lora / -prefix   ``peft.get_peft_model`` with the same LoRA / prefix config, loss from
                      ``model(..., labels=...)`` (full logits), as a peft user would write it
torch-full/-layers    plain transformers + AdamW, every weight / layers 20-29 unfrozen: the
                      peers for the two methods peft does not have
==================== ======================================================================

RSS is reported twice: ``peak_rss`` is the process's whole-life peak (``ru_maxrss``,
includes loading the model) as the issue measured it; ``train_rss`` is the peak during
the training steps alone (``VmHWM`` after resetting it through ``/proc/self/clear_refs``
once the model is loaded). Writes ``benchmarks/results/train_step.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
BATCH, SEQ, COMPLETION = 4, 128, 32
CASES = (
    "adapterhub-lora", "adapterhub-lora-gc", "peft-lora",
    "adapterhub-prefix-tuning", "peft-prefix",
    "adapterhub-layer-selective", "torch-layers",
    "adapterhub-full", "torch-full",
)
PEER = {
    "adapterhub-lora": "peft-lora",
    "adapterhub-lora-gc": "peft-lora",
    "adapterhub-prefix-tuning": "peft-prefix",
    "adapterhub-layer-selective": "torch-layers",
    "adapterhub-full": "torch-full",
}
LAYERS = "20-29"


def _vm_hwm_kib() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _batch(vocab: int) -> dict[str, Any]:
    import torch

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (BATCH, SEQ), generator=gen)
    labels = ids.clone()
    labels[:, : SEQ - COMPLETION] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def worker(case: str, repeats: int, threads: int, quick: bool) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    if quick:
        from adapterhub.testing.models import tiny_llama

        model, _ = tiny_llama()
        layers = "1"
    else:
        from adapterhub.basemodels import load_base

        model = load_base("smollm2-135m-instruct").model
        layers = LAYERS
    load_s = time.perf_counter() - t0
    batch = _batch(model.config.vocab_size)
    model.train()

    if case.startswith("adapterhub-"):
        from adapterhub.catalog import get_catalog
        from adapterhub.trainer.steps import CompletionLoss

        name = case.removeprefix("adapterhub-")
        gc = name.endswith("-gc")
        name = name.removesuffix("-gc")
        method = get_catalog().method(name)
        config = {
            "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]},
            "prefix-tuning": {"num_virtual_tokens": 20},
            "layer-selective": {"layers": layers},
            "full": {"restorable": False},
        }[name]
        adapter = method.attach(model, method.config_cls.model_validate(config))
        params = adapter.trainable_parameters()
        if gc:  # what `adapterhub train --gradient-checkpointing` does
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        loss_fn = CompletionLoss(model, torch.device("cpu"))
        n_tokens = int((batch["labels"][:, 1:] != -100).sum())

        def loss() -> Any:
            return loss_fn(batch) / n_tokens
    else:
        if case.startswith("peft-"):
            import peft

            cfg = (
                peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
                if case == "peft-lora"
                else peft.PrefixTuningConfig(num_virtual_tokens=20, task_type="CAUSAL_LM")
            )
            model = peft.get_peft_model(model, cfg)
        elif case == "torch-full":
            for p in model.parameters():
                p.requires_grad_(True)  # load_base hands out a frozen base
        elif case == "torch-layers":
            lo, hi = (int(x) for x in layers.split("-")) if "-" in layers else (int(layers), int(layers))
            for pname, p in model.named_parameters():
                parts = pname.split(".")
                p.requires_grad_(len(parts) > 2 and parts[1] == "layers" and lo <= int(parts[2]) <= hi)
        params = [p for p in model.parameters() if p.requires_grad]

        def loss() -> Any:
            return model(**batch).loss

    opt = torch.optim.AdamW(params, lr=1e-4)
    n_trainable = sum(p.numel() for p in params)
    rss_before_kib = _vm_hwm_kib()
    hwm_reset = _reset_hwm()
    times: list[float] = []
    losses: list[float] = []
    for i in range(repeats + 1):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        value = loss()
        value.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        dt = time.perf_counter() - t
        losses.append(float(value))
        if i:  # the first step warms allocator and caches
            times.append(dt)
    train_hwm = _vm_hwm_kib() if hwm_reset else None
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "case": case,
        "step_s": statistics.median(times),
        "step_s_all": [round(x, 4) for x in times],
        "peak_rss_gib": peak_kib / 2**20,
        "train_rss_gib": train_hwm / 2**20 if train_hwm else None,
        "load_peak_rss_gib": rss_before_kib / 2**20 if rss_before_kib else None,
        "trainable_params": n_trainable,
        "first_loss": losses[0],
        "load_s": load_s,
    }


def run_case(case: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", case, "--repeats", str(args.repeats), "--threads", str(args.threads)]
    if args.quick:
        cmd.append("--quick")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"case {case} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict[str, Any]]) -> str:
    by = {r["case"]: r for r in rows}
    full = by.get("adapterhub-full")
    lines = [
        "| case | trainable params | step (s, median) | vs peer | peak RSS (GiB) | train-phase RSS (GiB) | RSS vs full FT |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        peer = by.get(PEER.get(r["case"], ""))
        ratio = f"{r['step_s'] / peer['step_s']:.2f}× {peer['case']}" if peer else ""
        same = by.get("torch-full") if r["case"].startswith(("peft", "torch")) else full
        rss_ratio = f"{r['peak_rss_gib'] / same['peak_rss_gib']:.2f}" if same else ""
        train_rss = f"{r['train_rss_gib']:.2f}" if r.get("train_rss_gib") else "n/a"
        lines.append(
            f"| {r['case']} | {r['trainable_params']:,} | {r['step_s']:.3f} | {ratio} | {r['peak_rss_gib']:.2f} | {train_rss} | {rss_ratio} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="passes over all cases, alternating order")
    ap.add_argument("--quick", action="store_true", help="tiny model (seconds; checks the script, not a measurement)")
    ap.add_argument("--only", help="comma-separated subset of cases")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.repeats, args.threads, args.quick)))
        return
    cases = [c for c in CASES if not args.only or c in args.only.split(",")]
    # Rounds alternate the order (A B C ... then ... C B A) and each case keeps its best
    # round: on a shared machine, load that comes and goes then hits every case alike.
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in cases}
    for rnd in range(args.rounds):
        for case in cases if rnd % 2 == 0 else list(reversed(cases)):
            row = run_case(case, args)
            print(f"round {rnd + 1}: {case:28s} step {row['step_s']:.3f}s  peak RSS {row['peak_rss_gib']:.2f} GiB", file=sys.stderr)
            runs[case].append(row)
    rows = []
    for case in cases:
        best = min(runs[case], key=lambda r: r["step_s"])
        rows.append({**best, "rounds_step_s": [r["step_s"] for r in runs[case]],
                     "peak_rss_gib": max(r["peak_rss_gib"] for r in runs[case])})
    import peft
    import torch
    import transformers

    meta = {
        "model": "tiny-random-llama" if args.quick else "smollm2-135m-instruct (float32)",
        "batch": f"{BATCH}x{SEQ} tokens, loss on the last {COMPLETION} of each",
        "repeats": args.repeats,
        "rounds": args.rounds,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "cpus_online": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    md = table(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "train_step_quick" if args.quick else "train_step"
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(
        f"# One training step per method vs peft\n\n{md}\n\n"
        f"Model {meta['model']}; batch {meta['batch']}; median of {args.repeats} steps after one warm-up, best of {args.rounds} rounds in alternating order; "
        f"{args.threads} torch threads; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"peft {peft.__version__}; load average at the end {meta['loadavg_at_end'][0]:.1f} "
        f"(a shared machine: timings are noisy, ratios from the same run are what to compare).\n"
    )
    print(md)


if __name__ == "__main__":
    main()
