"""``adapterhub score`` and ``adapterhub eval`` (plugin ``adapterhub.evaluation.cli``).

``score`` needs no model and imports no torch: it reads the two files and calls the
metric library. ``eval`` loads a base model (and optionally an adapter), generates
greedily on each task's test split and runs the task's evaluators; ``--forgetting``
compares base and adapted on the adapter's own task and the other task packs.
``compare-baselines`` puts the base at 0, 1 and 5 shots next to adapters on one task.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
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


def _tasks_arg(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [t.strip() for t in value.split(",") if t.strip()]
    return names or None


class EvalCommand:
    name = "eval"
    help = "generate on task test splits and score them; --forgetting compares base and adapter"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--base", "-b", help="base model (alias, directory or HF id); default with --adapter: the adapter's base")
        parser.add_argument("--adapter", "-a", metavar="REF_OR_DIR", help="adapter directory or registry reference (name@version, name:tag, name)")
        parser.add_argument("--tasks", "-t", help="comma-separated task packs (default with --forgetting: own task + every other installed pack)")
        parser.add_argument("--limit", "-n", type=int, help="first N test examples per task (default: all; --forgetting: 20)")
        parser.add_argument("--forgetting", action="store_true", help="evaluate base and adapted model and report per-task deltas")
        parser.add_argument("--threshold", type=float, default=2.0,
                            help="forgetting: a task is forgotten when its whole 95%% interval lies below −THRESHOLD points (default 2)")
        parser.add_argument("--resolve", type=float, metavar="POINTS",
                            help="forgetting: after a pilot at --limit, pick n per task for 95%% intervals of ±POINTS")
        parser.add_argument("--budget", type=float, metavar="SECONDS",
                            help="with --resolve: seconds the whole run may take, pilot included (default 600)")
        parser.add_argument("--batch-size", type=int, default=8, help="generation batch size (default 8)")
        parser.add_argument("--max-new-tokens", type=int, help="override each task's generation length")
        parser.add_argument("--template", help="prompt template (default: the adapter's, else auto)")
        parser.add_argument("--shots", type=int, default=0, metavar="K",
                            help="put K solved train examples before each test prompt, as prior turns (default 0)")
        parser.add_argument("--seed", type=int, default=0, help="seed that draws the --shots examples (default 0)")
        parser.add_argument("--context-window", type=int, metavar="TOKENS",
                            help="prompt + generation limit that few-shot prompts must fit; shots are dropped, "
                                 "never the test input (default: the model's max_position_embeddings)")
        parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
        parser.add_argument("--report", type=Path, metavar="DIR", help="write JSON, Markdown and a PNG chart to DIR")
        parser.add_argument("--no-cache", action="store_true", help="regenerate base outputs instead of using the eval cache")
        parser.add_argument("--no-save", action="store_true", help="do not store metrics/forgetting with the adapter")
        parser.add_argument("--registry", metavar="URL", help="registry to pull --adapter refs from (default: local)")
        parser.add_argument("--lm-eval", metavar="TASKS",
                            help="run lm-evaluation-harness instead, over an in-process server: task packs "
                                 "(sentiment-rt; sentiment-rt:mc for its multiple-choice variant) or lm-eval task names")
        parser.add_argument("--lm-eval-args", default="", metavar="ARGS",
                            help="extra lm-eval CLI flags, one quoted string, after ours (e.g. \"--log_samples\")")
        add_json_flag(parser)

    def run(self, args: argparse.Namespace) -> int:
        from adapterhub.errors import ConfigError

        if args.lm_eval is not None:
            return self._lm_eval(args)
        if args.lm_eval_args:
            raise ConfigError("--lm-eval-args goes with --lm-eval TASKS")
        if args.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
        if args.limit is not None and args.limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {args.limit}")
        if args.shots < 0:
            raise ConfigError(f"--shots must be 0 or more, got {args.shots}")
        if args.context_window is not None and args.context_window < 1:
            raise ConfigError(f"--context-window must be at least 1, got {args.context_window}")
        if args.forgetting and args.shots:
            raise ConfigError("--forgetting compares zero-shot outputs; drop --shots")
        if (args.resolve is not None or args.budget is not None) and not args.forgetting:
            raise ConfigError("--resolve and --budget size a forgetting report; add --forgetting")
        if args.budget is not None and args.resolve is None:
            raise ConfigError("--budget limits --resolve; give --resolve POINTS too")
        if args.resolve is not None and not args.resolve > 0:
            raise ConfigError(f"--resolve must be above 0 points, got {args.resolve:g}")
        if args.budget is not None and not args.budget > 0:
            raise ConfigError(f"--budget must be above 0 seconds, got {args.budget:g}")
        if args.forgetting:
            return self._forgetting(args)
        if not args.base and not args.adapter:
            raise ConfigError("give --base (and optionally --adapter)")
        tasks = _tasks_arg(args.tasks)
        if not tasks:
            raise ConfigError("give --tasks T1,T2,... (see `adapterhub tasks`)")
        from adapterhub.evaluation.harness import run_eval
        from adapterhub.evaluation.loading import resolve_adapter

        source = resolve_adapter(args.adapter, args.registry) if args.adapter is not None else None
        run = run_eval(
            args.base, tasks, adapter=source, limit=args.limit, batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens, template=args.template, cache=not args.no_cache,
            progress=True, device=args.device, registry_url=args.registry,
            shots=args.shots, seed=args.seed, context_window=args.context_window,
        )
        saved = None
        if source is not None and not args.no_save:
            saved = _save_metrics(source, run, args.registry)
        doc = run.to_dict()
        if args.report is not None:
            from adapterhub.evaluation.report import write_eval_report

            title = f"{run.adapter or run.base} on {', '.join(tasks)}"
            doc["report_files"] = {k: str(v) for k, v in write_eval_report(run.tasks, args.report, title, {"base": run.base, "adapter": run.adapter}).items()}
        if args.json:
            print_json(doc)
            return 0
        rows = [
            (t.task, t.examples, t.shots["shots"], _tokens(t.prompt_tokens_mean), m, f"{v:.2f}", _ci(t.intervals().get(m)),
             "yes" if t.cached else "", f"{t.seconds:.1f}")
            for t in run.tasks for m, v in t.headline().items()
        ]
        print_table(("task", "n", "shots", "prompt_tok", "metric", "value", "ci95", "cached", "seconds"), rows)
        print(_ci_note([iv for t in run.tasks for iv in t.intervals().values()]))
        for t in run.tasks:
            if t.shots.get("shots_dropped"):
                print(f"{t.task}: {t.shots['shots_dropped']} shots dropped to fit the context window of "
                      f"{t.shots['context_window']} tokens (fewest kept: {t.shots['min_shots']})", file=sys.stderr)
        if saved:
            print(f"metrics stored in the {saved}", file=sys.stderr)
        if args.report is not None:
            print(f"report written to {args.report}", file=sys.stderr)
        return 0

    def _lm_eval(self, args: argparse.Namespace) -> int:
        """``--lm-eval``: the harness against the served adapter, stored like our metrics."""
        import shlex

        from adapterhub.errors import ConfigError
        from adapterhub.evaluation.lmeval import run_lm_eval
        from adapterhub.evaluation.loading import resolve_adapter

        # Flags of our own harness that would change the answer are refused, not ignored.
        if (args.forgetting or args.shots or args.template or args.report is not None
                or args.max_new_tokens is not None or args.context_window is not None or args.resolve is not None):
            raise ConfigError("--lm-eval runs the harness's own prompts and report; drop --forgetting, --shots, "
                              "--template, --max-new-tokens, --context-window, --resolve and --report")
        if args.limit is not None and args.limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {args.limit}")
        if not args.base and not args.adapter:
            raise ConfigError("give --base (and optionally --adapter)")
        try:
            extra = shlex.split(args.lm_eval_args)
        except ValueError as exc:
            raise ConfigError(f"--lm-eval-args: {exc}") from None
        source = resolve_adapter(args.adapter, args.registry) if args.adapter is not None else None
        run = run_lm_eval(args.base, _tasks_arg(args.lm_eval) or [], adapter=source, limit=args.limit,
                          extra_args=extra, device=args.device)
        saved = _save_metrics(source, run, args.registry) if source is not None and not args.no_save else None
        if args.json:
            print_json({**run.to_dict(), **({"stored_in": saved} if saved else {})})
            return 0
        ivs = run.intervals()
        rows = [(task, run.samples.get(task.removeprefix("lm-eval:"), "-"), m, f"{v:.2f}",
                 _ci(_Bounds(ivs[task][m]) if m in ivs.get(task, {}) else None))
                for task, values in run.metrics().items() for m, v in values.items()]
        print_table(("task", "n", "metric", "value", "ci95"), rows)
        print(f"lm-eval {run.harness['lm_eval']}, {run.seconds:.0f} s", file=sys.stderr)
        if saved:
            print(f"metrics stored in the {saved}", file=sys.stderr)
        return 0

    def _forgetting(self, args: argparse.Namespace) -> int:
        from adapterhub.errors import ConfigError
        from adapterhub.evaluation.forgetting import (
            DEFAULT_LIMIT,
            run_forgetting_detailed,
            save_forgetting,
        )
        from adapterhub.evaluation.loading import resolve_adapter

        if not args.adapter:
            raise ConfigError("--forgetting needs --adapter REF_OR_DIR")
        if args.template:
            raise ConfigError("--forgetting always uses the adapter's own template; drop --template")
        source = resolve_adapter(args.adapter, args.registry)
        options: dict[str, Any] = {
            "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "cache": not args.no_cache,
            "progress": True, "device": args.device, "registry_url": args.registry,
        }
        t0 = time.perf_counter()
        run = run_forgetting_detailed(args.base, source, _tasks_arg(args.tasks), args.limit or DEFAULT_LIMIT, args.threshold, **options)
        if args.resolve is not None:
            run = _resolve(run, source, args, options, time.perf_counter() - t0)
        saved = None if args.no_save else save_forgetting(source, run.report, args.registry)
        files: dict[str, Path] = {}
        if args.report is not None:
            from adapterhub.evaluation.report import write_forgetting_report

            files = write_forgetting_report(run, args.report)
        if args.json:
            doc = run.report.model_dump(mode="json")
            doc["adapter"], doc["base"] = run.adapter, run.base_name
            if saved:
                doc["stored_in"] = saved
            if files:
                doc["report_files"] = {k: str(v) for k, v in files.items()}
            print_json(doc)
            return 0
        from adapterhub.evaluation.report import forgetting_summary, forgetting_table

        head, body = forgetting_table(run.report)
        print_table(head, body)
        print("\n" + forgetting_summary(run.report))
        rep = run.report
        if rep.perplexity_base is not None and rep.perplexity_adapted is not None:
            print(f"\ngeneral-text perplexity: base {rep.perplexity_base:.2f} -> adapted {rep.perplexity_adapted:.2f}")
        if saved:
            print(f"forgetting report stored in the {saved}", file=sys.stderr)
        if files:
            print(f"report written to {args.report}", file=sys.stderr)
        return 0


def _resolve(pilot: Any, source: Any, args: argparse.Namespace, options: dict[str, Any], pilot_s: float) -> Any:
    """Re-run the report with n per task sized for ±``--resolve`` (:mod:`.resolve`)."""
    from adapterhub.catalog import get_catalog
    from adapterhub.evaluation import resolve
    from adapterhub.evaluation.forgetting import run_forgetting_detailed

    cat = get_catalog()
    available = {t: len(cat.task(t).load("test")) if t in cat.tasks else pilot.base[t].examples for t in pilot.base}
    budget = args.budget if args.budget is not None else resolve.DEFAULT_BUDGET_S
    plans = resolve.plan(pilot, args.resolve, budget, available, spent_s=pilot_s)
    for line in resolve.describe(plans, args.resolve):
        print(f"--resolve: {line}", file=sys.stderr)
    run = pilot
    if resolve.grows(plans):
        sizes = ", ".join(f"{p.task} {p.n}" for p in plans)
        print(f"--resolve: pilot took {pilot_s:.0f} s; evaluating again with n = {sizes}", file=sys.stderr)
        run = run_forgetting_detailed(args.base, source, list(pilot.base), pilot.report.generation.get("limit"), args.threshold,
                                      limits={p.task: p.n for p in plans}, **options)
    run.report = run.report.model_copy(update={"generation": {**run.report.generation,
                                                              "resolve": resolve.record(plans, args.resolve, budget, pilot_s)}})
    return run


def _shots_arg(value: str) -> list[int]:
    from adapterhub.errors import ConfigError

    try:
        shots = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--shots takes comma-separated counts such as 0,1,5, got {value!r}") from None
    if any(k < 0 for k in shots):
        raise ConfigError(f"--shots must be 0 or more, got {value!r}")
    return shots


class CompareBaselinesCommand:
    name = "compare-baselines"
    help = "one task: the base at 0, 1 and 5 shots next to one or more adapters (table, JSON and PNG chart)"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--task", "-t", required=True, help="the task pack to compare on")
        parser.add_argument("--adapter", "-a", action="append", default=[], metavar="REF_OR_DIR",
                            help="adapter directory or registry reference (repeatable); evaluated zero-shot")
        parser.add_argument("--base", "-b", help="base model (default: the first adapter's base)")
        parser.add_argument("--shots", default="0,1,5", help="base-model shot counts, comma-separated (default 0,1,5)")
        parser.add_argument("--seed", type=int, default=0, help="seed that draws the shots (default 0)")
        parser.add_argument("--limit", "-n", type=int, default=50, help="first N test examples, the same for every row (default 50)")
        parser.add_argument("--metric", help="metric to compare (default: accuracy, rougeL, bleu, chrf, or the first)")
        parser.add_argument("--batch-size", type=int, default=8, help="generation batch size (default 8)")
        parser.add_argument("--max-new-tokens", type=int, help="override the task's generation length")
        parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
        parser.add_argument("--out", type=Path, metavar="DIR", help="write baselines.{json,md,png} to DIR")
        parser.add_argument("--no-cache", action="store_true", help="regenerate base outputs instead of using the eval cache")
        parser.add_argument("--registry", metavar="URL", help="registry to pull --adapter refs from (default: local)")
        add_json_flag(parser)

    def run(self, args: argparse.Namespace) -> int:
        from adapterhub.errors import ConfigError
        from adapterhub.evaluation.baselines import compare_baselines, write_comparison

        if args.limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {args.limit}")
        if args.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
        if not args.base and not args.adapter:
            raise ConfigError("give --base and/or --adapter")
        cmp = compare_baselines(
            args.base, args.task, args.adapter, shots=_shots_arg(args.shots), limit=args.limit, seed=args.seed,
            metric=args.metric, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, cache=not args.no_cache,
            device=args.device, registry_url=args.registry,
        )
        files = write_comparison(cmp, args.out) if args.out is not None else {}
        if args.json:
            doc = cmp.to_dict()
            if files:
                doc["report_files"] = {k: str(v) for k, v in files.items()}
            print_json(doc)
            return 0
        head, *body = cmp.table()
        print_table(head, body)
        if files:
            print(f"table and chart written to {args.out}", file=sys.stderr)
        return 0


class _Bounds:
    """A stored interval record read back as the ``low``/``high`` that :func:`_ci` prints."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.low, self.high = record.get("low"), record.get("high")


def _ci(found: Any) -> str:
    from adapterhub.evaluation.intervals import ci_text

    return ci_text(found.low, found.high) if found is not None else "-"


def _ci_note(intervals: Any) -> str:
    """One line under a table saying how its intervals were computed."""
    methods = {iv.method for iv in intervals}
    parts = []
    if "wilson" in methods:
        parts.append("Wilson for proportions")
    boot = [iv for iv in intervals if iv.method == "bootstrap"]
    if boot:
        parts.append(f"bootstrap over examples for corpus metrics ({boot[0].resamples} resamples, seed {boot[0].seed})")
    return "ci95: 95% interval, " + ("; ".join(parts) if parts else "none for these metrics") + "; n = test examples"


def _tokens(mean: float | None) -> str:
    return f"{mean:.0f}" if mean is not None else "-"


def _save_metrics(source: Any, run: Any, registry_url: str | None) -> str | None:
    """Merge task metrics into an unpublished adapter's manifest, or attach a record.

    A published adapter gets an evaluation record carrying shots and seed (and per task
    any dropped shots). An unpublished one's manifest holds plain zero-shot numbers per
    task (what the registry index searches), so few-shot numbers are not merged there.
    """
    if source.ref is None:
        if any(t.shots.get("shots") for t in run.tasks):
            print(f"few-shot metrics are not stored in the manifest of {source.directory} (it holds zero-shot "
                  "metrics); push the adapter and evaluate the registry ref to keep them as an evaluation record",
                  file=sys.stderr)
            return None
        from adapterhub.artifact import update_manifest

        merged = {**source.manifest.metrics, **run.metrics()}
        # The intervals go with the numbers they belong to: a task re-evaluated without
        # an interval must not keep the old run's.
        fresh = run.intervals()
        intervals: dict[str, Any] = {t: v for t, v in source.manifest.intervals.items() if t not in fresh}
        intervals.update(fresh)
        update_manifest(source.directory, metrics=merged, intervals=intervals)
        return f"manifest of {source.directory}"
    from adapterhub.registry.client import Registry

    Registry(registry_url).attach_evaluation(source.ref, run.record())
    return f"evaluation record of {source.ref}"


def commands() -> list[Command]:
    return [ScoreCommand(), EvalCommand(), CompareBaselinesCommand()]


@hookimpl
def adapterhub_register_commands(register: Callable[[Command], None]) -> None:
    for cmd in commands():
        register(cmd)
