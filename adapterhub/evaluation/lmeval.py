"""``adapterhub eval --lm-eval``: lm-evaluation-harness against an in-process ``serve``.

The harness is run as its users run it, over HTTP: the base (and the adapter, under its
name) is served by the real app on a free loopback port for the length of the run and
stopped afterwards, also when the harness fails. lm-eval is imported only here.

How the prompt reaches the adapter the way it was trained (its chat template) decides
the score, so the defaults are the flags that do that:

* ``generate_until`` tasks: ``--model local-chat-completions --apply_chat_template``.
  lm-eval sends the prompt as one user message and the server renders it with the
  adapter's own training template (``chat``, or ``chat-short``'s empty system turn),
  exactly as ``adapterhub eval`` does; ``stop`` is the base's end-of-turn token.
* loglikelihood tasks (``multiple_choice``; ``<pack>:mc`` and lm-eval's own tasks):
  ``--model local-completions`` with ``tokenizer_backend=huggingface`` on the base's
  tokenizer (saved to a temporary directory: nothing is downloaded),
  ``tokenized_requests=True`` and ``--apply_chat_template``. In lm-eval 0.4.13 this is
  the only completions setup that applies a chat template: with ``tokenized_requests=False``
  it sends the chat as a JSON list for ``prompt``, and the remote tokenizer sends that list
  to ``/tokenize`` (both a 400 here). The server answers it with prompt logprobs
  (``echo``, ``max_tokens``) over token-id prompts. The harness renders the base's
  template without a system turn, so an adapter trained with ``chat-short`` is not scored
  exactly as it was trained on this path.

``--lm-eval-args`` are lm-eval CLI flags appended after ours (a later flag wins).
Results are read from lm-eval's own results file and stored as an evaluation record
(:class:`LmEvalRun`), as ``adapterhub eval`` stores its own.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapterhub.errors import ConfigError, EvaluationError, MissingPackageError

if TYPE_CHECKING:
    from adapterhub.evaluation.loading import AdapterSource

LM_EVAL_SPEC = "lm-eval[api]==0.4.13"
MC_MARK = ":mc"
"""``sentiment-rt:mc``: the pack's multiple-choice (loglikelihood) variant."""
RECORD_PREFIX = "lm-eval:"
"""Task keys of lm-eval metrics in a manifest (``lm-eval:adapterhub_sentiment_rt``), so
they sit beside ``adapterhub eval``'s own and never overwrite them."""
PROPORTIONS = ("acc", "acc_norm", "exact_match")
"""lm-eval metrics that are shares of examples: stored in points (×100) like ours."""


@dataclass
class LmEvalRun:
    """One harness run: lm-eval's per-task results and how they were obtained."""

    base: str
    adapter: str | None
    results: dict[str, dict[str, Any]]
    samples: dict[str, int]
    harness: dict[str, Any]
    seconds: float
    tasks: list[Any] = field(default_factory=list)
    """Empty: no few-shot bookkeeping of ours (``_save_metrics`` reads it)."""

    def metrics(self) -> dict[str, dict[str, float]]:
        """``{lm-eval:<task>: {metric: value}}``, proportions in points."""
        out: dict[str, dict[str, float]] = {}
        for task, values in self.results.items():
            row: dict[str, float] = {}
            for key, value in values.items():
                metric, _, filt = key.partition(",")
                if (metric.endswith("_stderr") or metric == "sample_len" or isinstance(value, bool)
                        or not isinstance(value, (int, float))):
                    continue
                name = metric if filt in ("", "none") else f"{metric}[{filt}]"
                # Rounded: 0.555 * 100 is 55.50000000000001 in binary floating point.
                row[name] = round(100.0 * float(value), 9) if metric in PROPORTIONS else float(value)
            if row:
                out[RECORD_PREFIX + task] = row
        return out

    def intervals(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Wilson intervals for the proportions (the same method ``adapterhub eval`` uses)."""
        from adapterhub.evaluation.intervals import Interval, wilson

        out: dict[str, dict[str, dict[str, Any]]] = {}
        for task, row in self.metrics().items():
            n = self.samples.get(task.removeprefix(RECORD_PREFIX), 0)
            if n <= 0:
                continue
            found = {}
            for metric, value in row.items():
                if metric.split("[")[0] in PROPORTIONS:
                    lo, hi = wilson(round(value * n / 100.0), n)
                    found[metric] = Interval(value, 100 * lo, 100 * hi, n, "wilson", 0.95).record()
            out[task] = found
        return out

    def record(self) -> dict[str, Any]:
        return {"kind": "lm-eval", "metrics": self.metrics(), "intervals": self.intervals(),
                "harness": self.harness, "seconds": round(self.seconds, 1),
                "tasks": {t: {"examples": n} for t, n in self.samples.items()}}

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "adapter": self.adapter, **self.record()}


def _require_lm_eval() -> str:
    try:
        from importlib.metadata import version

        import lm_eval  # noqa: F401
    except ImportError:
        raise MissingPackageError(f"--lm-eval needs lm-evaluation-harness: pip install '{LM_EVAL_SPEC}'") from None
    return version("lm_eval")


def _check_tasks(names: Sequence[str]) -> None:
    from adapterhub.catalog import get_catalog
    from adapterhub.evaluation.lmeval_tasks import check_exportable

    cat = get_catalog()
    for name in names:
        pack = name.removesuffix(MC_MARK)
        if pack in cat.tasks:
            check_exportable(cat.task(pack))
        elif name.endswith(MC_MARK):
            raise ConfigError(f"--lm-eval {name}: {pack!r} is not a task pack (see `adapterhub tasks`)")


def _split_tasks(names: Sequence[str], directory: Path, limit: int | None, eos: str | None) -> tuple[list[str], list[str], dict[str, int]]:
    """(generate tasks, loglikelihood tasks, examples per exported task): our packs are
    exported to ``directory``; any other name is lm-eval's (or an ``--include_path`` task)."""
    from adapterhub.catalog import get_catalog
    from adapterhub.evaluation.lmeval_tasks import export_task

    cat = get_catalog()
    gen: list[str] = []
    ll: list[str] = []
    sizes: dict[str, int] = {}
    for name in names:
        pack, mc = (name[: -len(MC_MARK)], True) if name.endswith(MC_MARK) else (name, False)
        if pack not in cat.tasks:
            if mc:
                raise ConfigError(f"--lm-eval {name}: {pack!r} is not a task pack (see `adapterhub tasks`)")
            ll.append(name)  # lm-eval's own: the completions model serves both kinds
            continue
        exported = export_task(cat.task(pack), directory, limit=limit, eos=eos)
        if mc and exported.multiple_choice is None:
            raise ConfigError(f"--lm-eval {name}: {pack!r} is not a label task; it has no multiple-choice variant")
        task = exported.multiple_choice if mc else exported.generate
        assert task is not None
        (ll if mc else gen).append(task)
        sizes[task] = exported.examples
    return gen, ll, sizes


@contextlib.contextmanager
def _only_included_tasks(enabled: bool) -> Iterator[None]:
    """While lm-eval's CLI runs, its TaskManager skips lm-eval's built-in tasks.

    Indexing the ~10,000 built-in task files takes about 20 s on this machine, more than
    a small run itself; when every task is one we exported (``--include_path``), none of
    them is needed. The CLI builds its TaskManager from ``lm_eval.tasks`` at call time,
    so swapping the name there for the run is enough (lm-eval is pinned: 0.4.13).
    """
    import lm_eval.tasks as lm_tasks

    original = lm_tasks.TaskManager
    if not enabled:
        yield
        return

    class IncludedOnly(original):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("include_defaults", False)
            super().__init__(*args, **kwargs)

    lm_tasks.TaskManager = IncludedOnly  # type: ignore[misc]
    try:
        yield
    finally:
        lm_tasks.TaskManager = original  # type: ignore[misc]


def _cli_run(argv: list[str], only_included: bool) -> None:
    """lm-eval's own CLI, in this process (its flags, its output files)."""
    from lm_eval._cli.harness import HarnessCLI

    cli = HarnessCLI()
    try:
        # HarnessCLI.parse_args reads sys.argv; the parser itself takes a list.
        args = cli._parser.parse_args(["run", *argv])
    except SystemExit as exc:
        raise ConfigError(f"--lm-eval-args: lm-eval refused the arguments {' '.join(argv)!r} (exit {exc.code})") from None
    # The harness prints its table on stdout; ours (or --json) goes there afterwards.
    with contextlib.redirect_stdout(sys.stderr), _only_included_tasks(only_included):
        cli.execute(args)


def _results(out: Path) -> dict[str, Any]:
    files = sorted(out.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise EvaluationError(f"lm-eval wrote no results file under {out}")
    data: dict[str, Any] = json.loads(files[-1].read_text(encoding="utf-8"))
    return data


@contextlib.contextmanager
def _served(base: str | Any, source: AdapterSource | None, device: str | None) -> Iterator[tuple[str, str, Any]]:
    """(url, model name, tokenizer): the base and the adapter behind a loopback server."""
    from adapterhub.evaluation.loading import load_base_model
    from adapterhub.host import AdapterHost
    from adapterhub.serving import Engine, EngineConfig
    from adapterhub.serving.http.app import create_app
    from adapterhub.serving.http.inprocess import serve_in_process

    loaded = load_base_model(base, device) if isinstance(base, str) else base  # a LoadedBase: tests
    host = AdapterHost(loaded)
    model = loaded.name
    if source is not None:
        model = source.ref or source.manifest.name
        host.load(source.directory, name=model)
    with Engine(host, EngineConfig()) as engine, serve_in_process(create_app(engine, base_alias=loaded.name)) as url:
        yield url, model, host.tokenizer


def run_lm_eval(
    base: Any, tasks: Sequence[str], *, adapter: AdapterSource | None = None, limit: int | None = None,
    extra_args: Sequence[str] = (), device: str | None = None,
) -> LmEvalRun:
    """Run lm-eval on ``tasks`` against ``base`` (a spec or a loaded base; default: the
    adapter's) plus ``adapter``, served in-process."""
    version = _require_lm_eval()
    if base is None:
        if adapter is None:
            raise ConfigError("give --base (and optionally --adapter)")
        base = adapter.manifest.base.name
    if not tasks:
        raise ConfigError("--lm-eval needs task names (task packs such as sentiment-rt, sentiment-rt:mc, or lm-eval's)")
    _check_tasks(tasks)  # a wrong name costs no model load
    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    samples: dict[str, int] = {}
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="adapterhub-lmeval-") as tmp, _served(base, adapter, device) as (url, model, tok):
        root = Path(tmp)
        gen, ll, sizes = _split_tasks(tasks, root / "tasks", limit, tok.eos_token)
        tok_dir = root / "tokenizer"
        common = ["--include_path", str(root / "tasks"), "--apply_chat_template"]
        if limit is not None and any(t not in sizes for t in ll):
            common += ["--limit", str(limit)]  # lm-eval's own tasks; ours are exported at this size
        plans: list[tuple[str, list[str], str]] = []
        if gen:
            plans.append(("local-chat-completions", gen,
                          f"base_url={url}/v1/chat/completions,model={model},max_retries=1,eos_string={tok.eos_token}"))
        if ll:
            tok.save_pretrained(tok_dir)
            plans.append(("local-completions", ll, f"base_url={url}/v1/completions,model={model},max_retries=1,"
                          f"tokenizer_backend=huggingface,tokenizer={tok_dir},tokenized_requests=True"))
        for i, (lm, names, model_args) in enumerate(plans):
            out = root / f"out{i}"
            argv = ["--model", lm, "--model_args", model_args, "--tasks", ",".join(names), *common,
                    "--output_path", str(out), *extra_args]
            started = time.perf_counter()
            try:
                _cli_run(argv, only_included=all(t in sizes for t in names))
            except (ConfigError, EvaluationError):
                raise
            except Exception as exc:  # the harness's HTTP or task errors, as one line
                raise EvaluationError(f"lm-eval ({lm}) failed: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
            data = _results(out)
            results.update(data.get("results", {}))
            for task, n in (data.get("n-samples") or {}).items():
                samples[task] = int((n.get("effective") or n.get("original") or 0) if isinstance(n, dict) else n)
            shown = model_args.replace(url, "http://127.0.0.1:PORT").replace(str(tok_dir), "<base tokenizer>")
            runs.append({"model": lm, "model_args": shown, "tasks": names, "apply_chat_template": True,
                         "extra_args": list(extra_args), "seconds": round(time.perf_counter() - started, 1)})
    harness = {"lm_eval": version, "runs": runs, "limit": limit}
    return LmEvalRun(base=str(getattr(base, "name", base)),
                     adapter=adapter.label if adapter else None, results=results, samples=samples,
                     harness=harness, seconds=time.perf_counter() - t0)
