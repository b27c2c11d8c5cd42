"""``adapterhub train``: fine-tune a base model into a task adapter.

    adapterhub train --base smollm2-135m-instruct --method lora --task sentiment-rt \\
        --steps 200 --set r=16 --out out/sentiment-lora [--json]

``--data FILE.jsonl`` instead of ``--task`` trains on your own prompt/completion or
Alpaca rows. ``--set key=value`` (repeatable; values parsed as JSON where possible) sets
the method's options and is checked against its config model. Under
``torchrun --nproc_per_node=N $(which adapterhub) train ...`` the same command trains
data-parallel and rank 0 writes the adapter. Ctrl-C saves a checkpoint; rerun the same
command with ``--resume`` to continue. ``--forgetting`` runs the evaluation package's
forgetting report on the fresh adapter and stores it in its manifest.

``--mix chitchat=0.1,faq-instruct=0.1`` draws that fraction of every batch from other
task packs (``--mix-data FILE[=FRAC]`` from a JSONL file) against forgetting; the
mixture is recorded in the manifest (``docs/training-mixtures.md``). Without ``--lr`` the
method's declared default learning rate is used (``adapterhub methods``). The summary
(text or ``--json``) gives the trainable share of the base, peak memory and tokens/s.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapterhub.errors import ConfigError
from adapterhub.hookspecs import hookimpl

if TYPE_CHECKING:
    from adapterhub.protocols.command import Command

EXIT_INTERRUPTED = 130


def _warmup(value: str) -> float:
    try:
        out = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of steps or a fraction below 1, got {value!r}") from None
    return out


class TrainCommand:
    name = "train"
    help = "fine-tune a base model into a task adapter (LoRA, prefix tuning, layer-selective, full)"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        # Imported here: every command loads this plugin, only `train` configures it.
        from adapterhub.trainer.config import TrainConfig
        from adapterhub.trainer.templates import TEMPLATES

        defaults = TrainConfig()
        parser.add_argument("--base", default="smollm2-135m-instruct", help="base model alias, directory or HF id")
        parser.add_argument("--method", default="lora", help="method plugin (adapterhub methods)")
        src = parser.add_mutually_exclusive_group(required=True)
        src.add_argument("--task", help="registered task pack to train on (its train split)")
        src.add_argument("--data", help="JSONL file of prompt/completion or Alpaca instruction/input/output rows")
        parser.add_argument("--mix", metavar="TASK=FRAC[,TASK=FRAC...]",
                            help="task mixture: this fraction of every batch from each named task pack's train split (against forgetting)")
        parser.add_argument("--mix-data", action="append", default=[], metavar="FILE[=FRAC]",
                            help="mixture rows from a JSONL file (prompt/completion or Alpaca), default fraction 0.1 (repeatable)")
        parser.add_argument("--eval-data", help="JSONL held-out set (default: the task's validation split, or a holdout of --data)")
        parser.add_argument("--out", required=True, help="output adapter directory")
        parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="method option (repeatable)")
        parser.add_argument("--steps", type=int, default=defaults.steps)
        parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="examples per micro-batch")
        parser.add_argument("--grad-accum", type=int, default=defaults.grad_accum, help="micro-batches per optimizer step")
        parser.add_argument("--lr", type=float, default=None,
                            help=f"peak learning rate (default: the method's own, see `adapterhub methods`; {defaults.lr:g} for a method without one)")
        parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
        parser.add_argument("--warmup", type=_warmup, default=defaults.warmup, help="warmup steps, or a fraction of --steps if below 1")
        parser.add_argument("--schedule", choices=("cosine", "linear", "constant"), default=defaults.schedule)
        parser.add_argument("--max-grad-norm", type=float, default=defaults.max_grad_norm, help="gradient clipping (0: off)")
        parser.add_argument("--max-length", type=int, default=defaults.max_length, help="tokens per example (prompt truncated from the left)")
        parser.add_argument("--template", choices=TEMPLATES, default=defaults.template, help="prompt template (default: the tokenizer's chat template)")
        parser.add_argument("--seed", type=int, default=defaults.seed)
        parser.add_argument("--limit", type=int, help="use only the first N training examples")
        parser.add_argument("--eval-every", type=int, default=0, help="held-out loss every N steps")
        parser.add_argument("--eval-size", type=int, default=defaults.eval_size, help="held-out examples (max)")
        parser.add_argument("--early-stopping", type=int, default=0, metavar="PATIENCE", help="stop after N evaluations without improvement")
        parser.add_argument("--checkpoint-every", type=int, default=0, help="save a resumable checkpoint every N steps")
        parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
        parser.add_argument("--skip-bad-rows", action="store_true", help="skip malformed rows (their count is printed) instead of failing")
        parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in backward (less memory)")
        parser.add_argument("--max-seconds", type=float, help="stop after this much training time")
        parser.add_argument("--name", help="adapter name in the manifest (default: the --out directory's name)")
        parser.add_argument("--description", default="")
        parser.add_argument("--overwrite", action="store_true", help="replace an adapter already in --out")
        parser.add_argument("--keep-checkpoints", action="store_true")
        parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available; the rank's GPU under torchrun)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        parser.add_argument("--forgetting", action="store_true", help="after training, run the forgetting report and store it in the manifest")
        parser.add_argument("--json", action="store_true", help="print one JSON object with the result on stdout")

    def run(self, args: argparse.Namespace) -> int:
        from adapterhub.trainer.config import TrainConfig, parse_set_options
        from adapterhub.trainer.loop import TrainingInterrupted

        method_options = parse_set_options(args.sets)
        options = options_from_args(args)
        # Check --set against the method's config before loading a 135M-parameter model.
        from adapterhub.catalog import get_catalog
        from adapterhub.trainer.config import coerce_method_config, resolve_lr

        method = get_catalog().method(args.method)
        method_config = coerce_method_config(method, method_options)
        cfg = TrainConfig.from_options(resolve_lr(method, options)[0])
        from adapterhub.trainer.data import load_data
        from adapterhub.trainer.distributed import from_environment

        ctx = from_environment(device=args.device)
        # Malformed rows are reported before the (slow) base model load, by rank 0 only.
        data = load_data(args.task or Path(args.data), limit=args.limit, skip_bad_rows=args.skip_bad_rows,
                         stream=None if ctx.is_main else io.StringIO())
        if cfg.mix or cfg.mix_data:  # unknown tasks and missing files fail before the model load too
            from adapterhub.trainer.mixture import load_sources

            load_sources(cfg.mix, cfg.mix_data, primary=data)

        from adapterhub.basemodels import load_base
        from adapterhub.trainer.loop import train

        try:
            base = load_base(args.base, device=ctx.device)
            try:
                result = train(
                    base, method, method_config, data, out_dir=args.out,
                    eval_data=Path(args.eval_data) if args.eval_data else None, dist=ctx, **options,
                )
            except TrainingInterrupted as stop:
                if ctx.is_main:
                    print(
                        f"adapterhub train: interrupted after step {stop.step}; checkpoint saved to {stop.checkpoint}. "
                        f"Run the same command with --resume to continue.",
                        file=sys.stderr,
                    )
                return EXIT_INTERRUPTED
            summary = result.as_dict()
            if args.forgetting and ctx.is_main:
                summary["forgetting"] = run_forgetting_hook(result.adapter_dir, base, args)
            if ctx.is_main:
                report(summary, base, as_json=args.json)
        finally:
            ctx.shutdown()
        return 0


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`TrainConfig` fields given on the command line."""
    return {
        "steps": args.steps, "batch_size": args.batch_size, "grad_accum": args.grad_accum, "lr": args.lr,
        "weight_decay": args.weight_decay, "warmup": args.warmup, "schedule": args.schedule,
        "max_grad_norm": args.max_grad_norm or None, "max_length": args.max_length, "seed": args.seed,
        "template": args.template, "eval_every": args.eval_every, "eval_size": args.eval_size,
        "early_stopping_patience": args.early_stopping, "checkpoint_every": args.checkpoint_every,
        "resume": args.resume, "skip_bad_rows": args.skip_bad_rows, "limit": args.limit,
        "gradient_checkpointing": args.gradient_checkpointing, "max_seconds": args.max_seconds,
        "progress": not args.no_progress, "overwrite": args.overwrite, "keep_checkpoints": args.keep_checkpoints,
        "name": args.name, "description": args.description, "mix": args.mix, "mix_data": args.mix_data,
    }


def run_forgetting_hook(adapter_dir: Path, base: Any, args: argparse.Namespace) -> Any:
    """The ``--forgetting`` hook point: hand the fresh adapter to the evaluation package.

    If ``adapterhub.evaluation.forgetting`` defines ``after_training(adapter_dir, base,
    args)`` that owns the whole step (and its return value lands in ``--json`` output);
    otherwise its ``run_forgetting`` report is stored in the adapter's manifest here.
    ``base`` is the same loaded base, with the adapter already detached.
    """
    try:
        from adapterhub.evaluation import forgetting
    except ImportError as exc:
        raise ConfigError(f"--forgetting needs adapterhub.evaluation ({exc})") from None
    hook = getattr(forgetting, "after_training", None)
    if callable(hook):
        return hook(adapter_dir=adapter_dir, base=base, args=args)
    from adapterhub.artifact import update_manifest

    rep = forgetting.run_forgetting(base, adapter_dir)
    update_manifest(adapter_dir, forgetting=rep)
    return rep.model_dump(mode="json")


def report(summary: dict[str, Any], base: Any, *, as_json: bool) -> None:
    if as_json:
        from adapterhub.cli.output import print_json

        print_json(summary)
        return
    total = summary.get("base_params") or sum(p.numel() for p in base.model.parameters())
    share = 100.0 * summary["trainable_params"] / total if total else 0.0
    print(f"adapter      {summary['adapter_dir']}")
    print(f"method       {summary['method']}  ({summary['trainable_params']:,} trainable parameters, {share:.3f}% of the base's {total:,})")
    print(f"lr           {summary['lr']:g}  ({summary['lr_source']})")
    print(f"steps        {summary['steps']}{'  (stopped early)' if summary['stopped_early'] else ''}")
    print(f"loss         {summary['initial_loss']:.4f} -> {summary['final_loss']:.4f}")
    print(f"time         {summary['seconds']:.1f} s  ({summary['tokens_per_s']:.0f} tokens/s)")
    print(f"peak memory  {format_bytes(summary['peak_memory_bytes'])}  ({_MEMORY_KINDS.get(summary['peak_memory_kind'], summary['peak_memory_kind'])})")
    for m in summary.get("mix") or []:
        print(f"mixture      {m['source']}: {m['rows_drawn']} rows ({100 * m['row_share']:.1f}% of rows, "
              f"{100 * m['completion_token_share']:.1f}% of completion tokens)")
    if summary["eval_losses"]:
        best = min(v for _, v in summary["eval_losses"])
        print(f"eval loss    best {best:.4f} over {len(summary['eval_losses'])} evaluations")


_MEMORY_KINDS = {
    "cuda_max_memory_allocated": "CUDA max_memory_allocated",
    "rss_peak_run": "peak RSS during training",
    "rss_peak_process": "peak RSS of the process",
    "unavailable": "not measurable here",
}


def format_bytes(n: int | None) -> str:
    if n is None:
        return "–"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"


@hookimpl
def adapterhub_register_commands(register: Callable[[Command], None]) -> None:
    register(TrainCommand())


def main(argv: list[str] | None = None) -> int:
    """``python -m adapterhub.trainer.cli ...`` (handy under ``torchrun -m``)."""
    from adapterhub.cli.main import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
