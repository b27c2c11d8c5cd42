"""``adapterhub score`` vs calling rouge-score and sacrebleu directly, side by side.

Data: 10,000 real prediction/reference pairs from the packaged ACLSum corpus
(``aclsum`` PyPI package): each sentence of a paper's abstract and introduction paired
with each of the paper's three one-sentence aspect summaries (challenge, approach,
outcome), in a fixed order, as a lead-sentence summariser would be scored.

Measured in one run, interleaved (direct, adapterhub, direct, ...), medians of
``--repeats`` runs:

* in-process: reading both files and scoring, once with the libraries called the way
  their users call them (``RougeScorer.score`` per pair + mean; ``sacrebleu.corpus_bleu``)
  and once with ``adapterhub.evaluation.score_files``;
* end to end: a fresh process each time, ``adapterhub score --metric M --json`` against
  ``python -c <the same direct code>`` (both pay interpreter start-up; adapterhub also
  pays its CLI and plugin loading, measured on its own as ``startup``: the time of
  ``adapterhub evaluators --json`` next to importing the two libraries and to a bare
  interpreter).

adapterhub's sources are byte-compiled first (see ``compile_adapterhub``). The numbers
are checked equal (1e-9) before any timing is reported. Writes
``benchmarks/results/score.json``. On a shared machine timings are noisy: compare the
ratio, and rerun when the load changes.

    .venv/bin/python benchmarks/score.py [--pairs 10000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "score.json"
TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]

DIRECT = {
    "rouge": """
import math, sys, json
from rouge_score import rouge_scorer
preds = open(sys.argv[1], encoding="utf-8").read().split("\\n")[:-1]
refs = open(sys.argv[2], encoding="utf-8").read().split("\\n")[:-1]
types = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
scorer = rouge_scorer.RougeScorer(types)
rows = [scorer.score(r, p) for p, r in zip(preds, refs)]
out = {t: {f: math.fsum(getattr(row[t], f) for row in rows) / len(rows) for f in ("precision", "recall", "fmeasure")} for t in types}
print(json.dumps(out))
""",
    "bleu": """
import sys, json
import sacrebleu
preds = open(sys.argv[1], encoding="utf-8").read().split("\\n")[:-1]
refs = open(sys.argv[2], encoding="utf-8").read().split("\\n")[:-1]
res = sacrebleu.corpus_bleu(preds, [refs], force=True)
print(json.dumps({"score": res.score}))
""",
}


def make_pairs(n: int) -> tuple[list[str], list[str]]:
    spec = importlib.util.find_spec("aclsum")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("benchmarks/score.py needs the aclsum data package: pip install --no-deps aclsum==0.1.2")
    data = Path(list(spec.submodule_search_locations)[0]) / "dataset"
    docs = []
    for split in ("train", "val", "test"):
        with open(data / f"{split}.jsonl", encoding="utf-8") as fh:
            docs += [json.loads(line) for line in fh if line.strip()]
    preds: list[str] = []
    refs: list[str] = []
    for doc in docs:
        sents = doc["sentences"]["abstract"] + doc["sentences"].get("introduction", [])
        for sent in sents:
            for aspect in ("challenge", "approach", "outcome"):
                preds.append(" ".join(sent.split()))
                refs.append(" ".join(doc["summary"][aspect].split()))
    if len(preds) < n:
        sys.exit(f"only {len(preds)} pairs available")
    return preds[:n], refs[:n]


def direct_inprocess(metric: str, p: Path, r: Path) -> dict[str, Any]:
    preds = p.read_text(encoding="utf-8").split("\n")[:-1]
    refs = r.read_text(encoding="utf-8").split("\n")[:-1]
    if metric == "rouge":
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(TYPES)
        rows = [scorer.score(ref, pred) for pred, ref in zip(preds, refs, strict=True)]
        return {
            t: {f: math.fsum(getattr(row[t], f) for row in rows) / len(rows) for f in ("precision", "recall", "fmeasure")}
            for t in TYPES
        }
    import sacrebleu

    return {"score": sacrebleu.corpus_bleu(preds, [refs], force=True).score}


def ours_inprocess(metric: str, p: Path, r: Path) -> dict[str, Any]:
    from adapterhub.evaluation.scoring import score_files

    corpus = score_files(metric, p, r).corpus
    return {t: corpus[t] for t in TYPES} if metric == "rouge" else {"score": corpus["score"]}


def check_equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    for k, v in a.items():
        if isinstance(v, dict):
            check_equal(v, b[k])
        elif abs(v - b[k]) > 1e-9:
            raise SystemExit(f"numbers differ: {k}: {v} vs {b[k]}")


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_process(cmd: list[str]) -> tuple[float, float, dict[str, Any]]:
    """(wall seconds, CPU seconds of the child, its JSON output).

    CPU time (user + system) hardly moves when other jobs compete for the cores, which
    wall time does a lot on a shared machine; both are reported.
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    dt = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed: {done.stderr.strip()[-500:]}")
    return dt, cpu, json.loads(done.stdout)


def compile_adapterhub() -> None:
    """Byte-compile adapterhub's sources, as ``pip install`` does for every package.

    rouge-score and sacrebleu run from site-packages with their ``.pyc`` files. An
    editable checkout under ``PYTHONDONTWRITEBYTECODE=1`` (set on some machines) would
    otherwise recompile every adapterhub module in every process (~30 ms of start-up on
    2 cores), a cost a regular installation never has.
    """
    import compileall
    import importlib

    for name in ("adapterhub", "adapterhub.plugins", "adapterhub.registry"):
        for root in importlib.import_module(name).__path__:
            compileall.compile_dir(root, quiet=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--metrics", default="rouge,bleu")
    ap.add_argument("--no-cli", action="store_true", help="skip the end-to-end process timings")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    preds, refs = make_pairs(args.pairs)
    adapterhub_cli = str(Path(sys.executable).with_name("adapterhub"))
    if not args.no_cli:
        compile_adapterhub()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        p, r = Path(tmp) / "pred.txt", Path(tmp) / "ref.txt"
        p.write_text("\n".join(preds) + "\n", encoding="utf-8")
        r.write_text("\n".join(refs) + "\n", encoding="utf-8")
        for metric in args.metrics.split(","):
            # warm-up: imports and first-call costs out of the measured runs, equality check
            check_equal(direct_inprocess(metric, p, r), ours_inprocess(metric, p, r))
            t_direct, t_ours = [], []
            for _ in range(args.repeats):
                t_direct.append(timed(lambda: direct_inprocess(metric, p, r))[0])  # noqa: B023
                t_ours.append(timed(lambda: ours_inprocess(metric, p, r))[0])  # noqa: B023
            row: dict[str, Any] = {
                "in_process": {
                    "direct_s": statistics.median(t_direct),
                    "adapterhub_s": statistics.median(t_ours),
                    "ratio": statistics.median(t_ours) / statistics.median(t_direct),
                    "direct_runs": t_direct,
                    "adapterhub_runs": t_ours,
                }
            }
            if not args.no_cli:
                c_direct, c_ours, cpu_direct, cpu_ours = [], [], [], []
                for _ in range(args.repeats):
                    dt, cpu, direct_out = run_process([sys.executable, "-c", DIRECT[metric], str(p), str(r)])
                    c_direct.append(dt)
                    cpu_direct.append(cpu)
                    dt, cpu, ours_out = run_process([adapterhub_cli, "score", "--metric", metric, "-p", str(p), "-r", str(r), "--json"])
                    c_ours.append(dt)
                    cpu_ours.append(cpu)
                    check_equal(direct_out, {k: ours_out[k] for k in direct_out})
                row["end_to_end"] = {
                    "direct_s": statistics.median(c_direct),
                    "adapterhub_s": statistics.median(c_ours),
                    "ratio": statistics.median(c_ours) / statistics.median(c_direct),
                    # CPU seconds (user + system) of each process: robust to other load.
                    "direct_cpu_s": statistics.median(cpu_direct),
                    "adapterhub_cpu_s": statistics.median(cpu_ours),
                    "cpu_ratio": statistics.median(cpu_ours) / statistics.median(cpu_direct),
                    "direct_runs": c_direct,
                    "adapterhub_runs": c_ours,
                    "direct_cpu_runs": cpu_direct,
                    "adapterhub_cpu_runs": cpu_ours,
                }
            results[metric] = row
            print(json.dumps({metric: {k: {kk: round(vv, 3) for kk, vv in v.items() if kk.endswith(("_s", "ratio"))} for k, v in row.items()}}))
    startup: dict[str, Any] = {}
    if not args.no_cli:
        # What end-to-end runs pay before scoring: adapterhub's CLI and plugin loading
        # (every built-in plugin is imported to build the catalog; method code, torch and
        # transformers are not) vs the libraries' imports, and a bare interpreter.
        cli_runs, lib_runs, bare_runs = [], [], []
        for _ in range(args.repeats):
            cli_runs.append(run_process([adapterhub_cli, "evaluators", "--json"])[0])
            lib_runs.append(run_process([sys.executable, "-c", "import json, rouge_score.rouge_scorer, sacrebleu; print('{}')"])[0])
            bare_runs.append(run_process([sys.executable, "-c", "print('{}')"])[0])
        startup = {
            "adapterhub_evaluators_json_s": statistics.median(cli_runs),
            "import_rouge_score_sacrebleu_s": statistics.median(lib_runs),
            "python_bare_s": statistics.median(bare_runs),
        }
        print(json.dumps({"startup": {k: round(v, 3) for k, v in startup.items()}}))
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    doc = {
        "benchmark": "adapterhub score vs rouge-score / sacrebleu called directly",
        "pairs": args.pairs,
        "repeats": args.repeats,
        "data": "ACLSum abstract+introduction sentences x aspect summaries (aclsum==0.1.2)",
        "statistic": "median seconds; ratio = adapterhub / direct; end to end also CPU seconds (cpu_ratio)",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "loadavg_at_end": load, "platform": platform.platform()},
        "bytecode": "adapterhub byte-compiled before timing, as pip install does (compile_adapterhub)",
        "results": results,
        "startup": startup,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
