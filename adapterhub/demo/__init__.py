"""``adapterhub demo``: the main job end to end on the embedded defaults.

Evaluate the packaged base model zero-shot, train a LoRA adapter on ``sentiment-rt`` and
a prefix-tuning adapter on ``summarize-aclsum``, evaluate both and their forgetting on
the other task packs, put each beside the base prompted with 0, 1 and 5 solved examples
(``compare-baselines`` on a few test examples), push both to a local registry with metrics and reports in their
manifests, serve a mixed batch (a review and an abstract, each with its own adapter) from
one ``AdapterHost``, ask the same adapters and the bare base again over the
OpenAI-compatible HTTP API (in-process server, official ``openai`` client, one answer
streamed), and write a report directory (Markdown + PNG charts).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from adapterhub.hookspecs import hookimpl
from adapterhub.protocols.command import Command


class DemoCommand:
    name = "demo"
    help = "run the main job end to end (train, evaluate, push, hot-swap) on the packaged model"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--quick", action="store_true", help="tiny random model and tiny budgets (seconds): checks the path, not quality")
        parser.add_argument("--out", type=Path, default=Path("demo-out"), help="demo directory (registry, adapters, report)")
        parser.add_argument("--fresh", action="store_true", help="retrain and re-evaluate instead of reusing finished adapters")
        parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")

    def run(self, args: argparse.Namespace) -> int:
        from adapterhub.demo.run import DemoSettings, run_demo

        if args.quick:
            import torch

            # The tiny model gains nothing from intra-op threads, and OpenMP spin-waiting
            # makes it many times slower on a busy machine.
            torch.set_num_threads(1)
        settings = DemoSettings.quick() if args.quick else DemoSettings.full()
        summary = run_demo(settings, args.out, fresh=args.fresh, as_json=args.json)
        return 0 if summary else 1


@hookimpl
def adapterhub_register_commands(register: Callable[[Command], None]) -> None:
    register(DemoCommand())
