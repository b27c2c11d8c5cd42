"""``adapterhub score`` and ``adapterhub eval`` (plugin ``adapterhub.evaluation.cli``).

``score`` needs no model and imports no torch: it reads the two files and calls the
metric library. ``eval`` loads a base model (and optionally an adapter), generates
greedily on each task's test split and runs the task's evaluators; ``--forgetting``
compares base and adapted on the adapter's own task and the other task packs.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapterhub.cli.output import add_json_flag, print_json, print_table
from adapterhub.errors import DataError
from adapterhub.hookspecs import hookimpl

if TYPE_CHECKING:
    from adapterhub.protocols import Command
    from adapterhub.protocols.evaluator import EvalResult


def _jsonable_row(row: Any) -> Any:
    """rouge-score's per-example ``{type: Score}`` → plain dicts (namedtuples → objects)."""
    if isinstance(row, dict):
        return {k: _jsonable_row(v) for k, v in row.items()}
    as_dict = getattr(row, "_asdict", None)
    if callable(as_dict):
        return dict(as_dict())
    return row


def write_per_example(result: EvalResult, path: Path) -> None:
    from adapterhub.evaluation.cache import atomic_write_text

    rows = result.per_example or []
    atomic_write_text(path, "".join(json.dumps(_jsonable_row(r), ensure_ascii=False) + "\n" for r in rows))


def _print_human(result: EvalResult) -> None:
    corpus = result.corpus
    if result.evaluator == "rouge":
        rows = [(t, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['fmeasure']:.4f}") for t, v in corpus.items()]
        print_table(("metric", "precision", "recall", "fmeasure"), rows)
        return
    if result.evaluator == "bleu":
        prec = "/".join(f"{p:.1f}" for p in corpus["precisions"])
        ratio = corpus["sys_len"] / corpus["ref_len"] if corpus["ref_len"] else 0.0
        print(
            f"BLEU = {corpus['score']:.2f} {prec} (BP = {corpus['bp']:.3f} ratio = {ratio:.3f} "
            f"hyp_len = {corpus['sys_len']} ref_len = {corpus['ref_len']})"
        )
        print(f"signature: {corpus['signature']}")
        return
    rows2 = [(k, f"{v:.4f}" if isinstance(v, float) else v) for k, v in corpus.items() if not isinstance(v, (list, dict))]
    print_table(("metric", "value"), rows2)


class ScoreCommand:
    name = "score"
    help = "score prediction/reference files with an evaluator (rouge, bleu, chrf, accuracy, evaluate:<metric>...)"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--metric", "-m", required=True, help="evaluator name, e.g. rouge, bleu, chrf, exact_match, accuracy, evaluate:meteor")
        parser.add_argument("--predictions", "-p", required=True, type=Path, help="one prediction per line (or .jsonl of strings)")
        parser.add_argument("--references", "-r", required=True, type=Path, help="one reference per line, or .jsonl with a list of references per line")
        parser.add_argument("--format", choices=("auto", "text", "jsonl"), default="auto", help="file format (default: .jsonl/.json → jsonl, else text)")
        parser.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE", help="evaluator option, e.g. tokenize=intl, use_stemmer=true (repeatable)")
        parser.add_argument("--per-example", type=Path, metavar="FILE", help="also write per-example scores as JSONL to FILE")
        add_json_flag(parser)

    def run(self, args: argparse.Namespace) -> int:
        from adapterhub.evaluation.scoring import parse_option_values, score_files

        options = parse_option_values(args.option)
        if args.per_example is not None and args.metric.split(":", 1)[0] in ("bleu", "chrf", "exact_match", "accuracy"):
            options.setdefault("per_example", True)
        result = score_files(args.metric, args.predictions, args.references, options, fmt=args.format)
        if args.per_example is not None:
            if result.per_example is None:
                raise DataError(f"evaluator {result.evaluator!r} gives no per-example scores")
            write_per_example(result, args.per_example)
        if args.json:
            # The reference library's own names and scales (rouge 0–1, sacrebleu 0–100).
            print_json(result.corpus)
        else:
            _print_human(result)
        return 0


def commands() -> list[Command]:
    return [ScoreCommand()]


@hookimpl
def adapterhub_register_commands(register: Callable[[Command], None]) -> None:
    for cmd in commands():
        register(cmd)
