"""Reliability soak: every reliability category at soak scale, one results file.

    .venv/bin/python benchmarks/soak.py                 # everything (~10-15 min, sequential)
    .venv/bin/python benchmarks/soak.py --only names_paths,plugin_failures

Categories (each records cases tried, cases that ended correctly, duration and the
exact command that reproduces it):

* ``hostile_files``: >= 10,000 Hypothesis cases over weights files, manifests and
  damaged adapter directories, generated and judged by :mod:`adapterhub.testing.hostile`.
* ``no_code_execution``: ``tests/reliability/test_no_code_execution.py`` (static scan +
  disguised pickles against every reader).
* ``names_paths``: the registry's hostile name/ref corpus (``tests/reliability/test_names.py``)
  against every CLI command that takes a name or ref, Hypothesis-fuzzed refs against the
  Python API, and that test file itself. A case ends correctly with a one-line typed error
  (or success inside the store) and nothing changed in the store or outside it.
* ``plugin_failures``: ``tests/reliability/test_plugins.py`` (really pip-installed broken
  plugins: import error, bad hook signature, hook raising, duplicate name, slow import).
* ``registry_crash_points``: ``tests/reliability/test_registry_faults.py`` (kill -9 at
  every push stage, racing pushers, disk full).
* ``concurrency_kill9``: ``tests/reliability/test_concurrency.py`` for a full minute per
  store (local and SeaweedFS), 8 processes, random kill -9.
* ``serving_churn``: 4 threads x 1,000 generate requests while adapters are replaced
  (``tests/reliability/test_serving_churn.py``), then 10,000 swaps with RSS sampled.

Writes ``benchmarks/results/soak.json`` (merged per category, so ``--only`` updates one
row). Exit status 1 if any case ended incorrectly.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BIN = Path(sys.executable).parent
Result = dict[str, Any]


def _load(rel: str) -> ModuleType:
    """Import a test module by path (to reuse its corpus/helpers, not to run its tests)."""
    path = REPO / rel
    spec = importlib.util.spec_from_file_location(f"soak_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --- pytest-driven categories -------------------------------------------------------------------
def _pytest(files: list[str], env: dict[str, str], k: str | None = None, timeout: float = 1800) -> Result:
    argv = [str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", *files] + (["-k", k] if k else [])
    shown = " ".join([*(f"{n}={v}" for n, v in env.items()), ".venv/bin/pytest", *map(shlex.quote, argv[1:])])
    with tempfile.TemporaryDirectory(prefix="soak-junit-") as tmp:
        junit = Path(tmp) / "junit.xml"
        proc = subprocess.run(
            [*argv, f"--junitxml={junit}", "-o", "junit_family=xunit1"], cwd=REPO, env={**os.environ, **env},
            capture_output=True, text=True, timeout=timeout,
        )
        tests: list[dict[str, Any]] = []
        if junit.exists():
            for case in ET.parse(junit).iter("testcase"):
                outcome, message = "passed", ""
                for tag in ("failure", "error", "skipped"):
                    node = case.find(tag)
                    if node is not None:
                        outcome = tag
                        message = (node.get("message") or "")[:300]
                props = {p.get("name"): p.get("value") for p in case.iter("property")}
                row: dict[str, Any] = {"test": case.get("name"), "outcome": outcome, "seconds": float(case.get("time") or 0)}
                if props:
                    row["properties"] = {k2: int(v) if v is not None and v.lstrip("-").isdigit() else v for k2, v in props.items()}
                if outcome != "passed":
                    row["message"] = message
                tests.append(row)
    counts = Counter(t["outcome"] for t in tests)
    out: Result = {
        "pytest_command": shown, "returncode": proc.returncode, "tests": len(tests),
        "passed": counts["passed"], "failed": counts["failure"] + counts["error"], "skipped": counts["skipped"],
        "per_test": tests,
    }
    if proc.returncode != 0:
        out["output_tail"] = (proc.stdout + proc.stderr)[-3000:]
    return out


def _pytest_category(files: list[str], env: dict[str, str] | None = None, k: str | None = None) -> Result:
    r = _pytest(files, env or {}, k)
    return {"cases_tried": r["tests"] - r["skipped"], "ended_correctly": r["passed"], **r}


def cat_no_code_execution(args: argparse.Namespace) -> Result:
    return _pytest_category(["tests/reliability/test_no_code_execution.py"])


def cat_plugin_failures(args: argparse.Namespace) -> Result:
    return _pytest_category(["tests/reliability/test_plugins.py"])


def cat_registry_crash_points(args: argparse.Namespace) -> Result:
    return _pytest_category(["tests/reliability/test_registry_faults.py"])


def cat_concurrency_kill9(args: argparse.Namespace) -> Result:
    r = _pytest(["tests/reliability/test_concurrency.py"], {"ADAPTERHUB_CONCURRENCY_SECONDS": str(args.concurrency_seconds)})
    tried = correct = 0
    per_store: dict[str, Any] = {}
    for t in r["per_test"]:
        p = t.get("properties", {})
        started = int(p.get("ops_started", 0))
        tried += started
        # An operation ends correctly when it completed (success or the expected typed
        # error) or, if it was killed, when the post-mortem found the store consistent and
        # gc reclaimed its leftovers: the test passing is that post-mortem.
        correct += started if t["outcome"] == "passed" else int(p.get("ops_done", 0)) + int(p.get("ops_expected_error", 0))
        per_store[t["test"]] = {"outcome": t["outcome"], "seconds": t["seconds"], **p}
    return {"cases_tried": tried, "ended_correctly": correct, "per_store": per_store,
            **{k: v for k, v in r.items() if k != "per_test"}}


# --- hostile files (Hypothesis, in process) --------------------------------------------------------
def _fuzz(cfg: Any, given_: Any, kind: str, body: Callable[..., str], judged: Callable[[str, Callable[[], str]], None]) -> Callable[[], None]:
    """One Hypothesis run of ``body`` (a factory: ``given`` binds the rightmost argument)."""

    @cfg
    @given_
    def run(x: Any) -> None:
        judged(kind, lambda: body(x))

    return run  # type: ignore[no-any-return]


def cat_hostile_files(args: argparse.Namespace) -> Result:
    import torch
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from adapterhub.artifact import read_adapter, write_adapter
    from adapterhub.manifest import BaseFingerprint
    from adapterhub.testing import hostile

    n = args.hostile_cases
    plan = {  # share of the cases per generator (weights files dominate: the attack surface)
        "weights_engine": 0.35, "weights_engine_via_path": 0.05, "arbitrary_bytes": 0.12, "structured_headers": 0.12,
        "any_length_word": 0.06, "manifest_engine": 0.12, "arbitrary_json_manifest": 0.08, "damaged_adapter_dir": 0.10,
    }
    counts: dict[str, Counter[str]] = {k: Counter() for k in plan}
    violations: list[dict[str, str]] = []
    scratch = Path(tempfile.mkdtemp(prefix="soak-hostile-"))
    base = BaseFingerprint(name="tiny", architecture="LlamaForCausalLM", model_type="llama", weights_sha256="ab" * 32, num_parameters=1, dtype="float32")
    pristine = scratch / "pristine"
    write_adapter(pristine, {"name": "soak", "method": "lora", "method_kind": "reparameterization", "base": base},
                  {"layer.lora_A": torch.randn(4, 16), "layer.lora_B": torch.randn(16, 4)})

    def judged(kind: str, fn: Callable[[], str]) -> None:
        try:
            outcome = fn()
            counts[kind]["accepted" if outcome == "accepted" else "refused"] += 1
        except hostile.ContractViolation as exc:
            counts[kind]["violation"] += 1
            violations.append({"generator": kind, "error": str(exc)[:400]})

    json_st = st.recursive(
        st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=20,
    )
    entry_st = st.fixed_dictionaries({
        "dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3"]) | st.text(max_size=5),
        "shape": st.lists(st.integers(-2, 5) | st.integers(2**62, 2**65), max_size=3) | json_st,
        "data_offsets": st.lists(st.integers(-2, 80), max_size=3) | json_st,
    })
    counter = iter(range(10**9))

    def dir_case(rng: random.Random) -> str:
        case = scratch / f"d{next(counter)}"
        shutil.copytree(pristine, case / "adapter")
        try:
            _, must_refuse = hostile.mutate_adapter_dir(rng, case / "adapter")
            return hostile.check_adapter_dir(case / "adapter", must_refuse, read_adapter)
        finally:
            shutil.rmtree(case, ignore_errors=True)

    def weights(rng: random.Random) -> str:
        cat, expect, data = hostile.hostile_safetensors(rng)
        return hostile.check_safetensors_bytes(data, expect, f"{cat}.safetensors")

    def weights_path(rng: random.Random) -> str:
        cat, expect, data = hostile.hostile_safetensors(rng)
        return hostile.check_safetensors_file(scratch / f"{cat}.safetensors", data, expect)

    def manifest(rng: random.Random) -> str:
        cat, expect, data = hostile.hostile_manifest(rng)
        return hostile.check_manifest_bytes(data, expect, f"{cat}/manifest.json")

    bodies: dict[str, tuple[Any, Callable[..., str]]] = {
        "weights_engine": (st.randoms(use_true_random=False), weights),
        "weights_engine_via_path": (st.randoms(use_true_random=False), weights_path),
        "arbitrary_bytes": (st.binary(max_size=600), hostile.check_safetensors_bytes),
        "structured_headers": (st.tuples(st.dictionaries(st.text(max_size=10), entry_st | json_st, max_size=4), st.binary(max_size=80)),
                               lambda hd: hostile.check_safetensors_bytes(hostile.encode(hd[0], hd[1]))),
        "any_length_word": (st.tuples(st.integers(0, 2**64 - 1), st.binary(max_size=64)),
                            lambda nt: hostile.check_safetensors_bytes(nt[0].to_bytes(8, "little") + nt[1])),
        "manifest_engine": (st.randoms(use_true_random=False), manifest),
        "arbitrary_json_manifest": (json_st, lambda obj: hostile.check_manifest_bytes(json.dumps(obj).encode())),
        "damaged_adapter_dir": (st.randoms(use_true_random=False), dir_case),
    }
    try:
        for kind, share in plan.items():
            strategy, body = bodies[kind]
            cfg = settings(max_examples=max(1, int(n * share)), deadline=None, database=None, suppress_health_check=list(HealthCheck))
            _fuzz(cfg, given(strategy), kind, body, judged)()
            print(f"  hostile {kind}: {sum(counts[kind].values())} cases {dict(counts[kind])}", file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    tried = sum(sum(c.values()) for c in counts.values())
    return {
        "cases_tried": tried, "ended_correctly": tried - len(violations), "violations": len(violations),
        "violation_examples": violations[:10], "by_generator": {k: dict(v) for k, v in counts.items()},
        "engine": "Hypothesis (no example database) driving adapterhub.testing.hostile generators and oracles",
    }


# --- names and paths ----------------------------------------------------------------------------------
def _snapshot(*roots: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for root in roots:
        for dirpath, dirnames, files in os.walk(root):
            for f in files + [d for d in dirnames if Path(dirpath, d).is_symlink()]:
                p = Path(dirpath, f)
                if {"views", "pending", "remotes"} & set(p.parts) or p.name.startswith("index.sqlite"):
                    continue  # caches that a read may legitimately (re)build
                out[str(p)] = os.readlink(p).encode() if p.is_symlink() else p.read_bytes()
    return out


def cat_names_paths(args: argparse.Namespace) -> Result:
    from adapterhub.registry.client import Registry
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from adapterhub.cli.main import main
    from adapterhub.errors import AdapterNotFoundError, InvalidNameError
    from adapterhub.testing.stores import write_test_adapter

    corpus_mod = _load("tests/reliability/test_names.py")
    refs: list[str] = list(dict.fromkeys(corpus_mod.HOSTILE_REFS))
    tmp = Path(tempfile.mkdtemp(prefix="soak-names-"))
    old_cwd, old_home = os.getcwd(), os.environ.get("ADAPTERHUB_HOME")
    os.environ["ADAPTERHUB_HOME"] = str(tmp / "home")
    work = tmp / "work" / "deep"
    work.mkdir(parents=True)
    os.chdir(work)  # relative refs like ../../etc resolve inside the scratch tree
    outside = tmp / "outside"
    (outside / "etc").mkdir(parents=True)
    (outside / "etc" / "passwd").write_text("root:x:0:0\n")
    outside_before = _snapshot(outside)
    failures: list[dict[str, str]] = []
    per_command: Counter[str] = Counter()
    tried = 0
    try:
        reg = Registry(progress=False)
        adapter = write_test_adapter(tmp / "adapter", seed=1)
        reg.push(adapter, "good/one", version="1.0.0", tag="prod")
        peft = tmp / "peft"
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["export-peft", "good/one@1.0.0", str(peft)]) == 0
        store_root = reg.local.root
        commands: dict[str, Callable[[str], list[str]]] = {
            "push": lambda r: ["push", "--", str(adapter), r],
            "pull": lambda r: ["pull", "--", r],
            "show": lambda r: ["show", "--", r],
            "tag": lambda r: ["tag", "--", r, "t"],
            "rm": lambda r: ["rm", "--all", "--", r],
            "verify": lambda r: ["verify", "--", r],
            "export-peft": lambda r: ["export-peft", "--", r, str(tmp / "export")],
            "import-peft": lambda r: ["import-peft", "--base", "tiny-random-llama", "--", str(peft), r],
            "generate": lambda r: ["generate", "--base", "tiny-random-llama", f"--adapter={r}", "--max-new-tokens", "1", "hi"],
            "eval": lambda r: ["eval", "--base", "tiny-random-llama", f"--adapter={r}", "--tasks", "sentiment-rt", "--limit", "1"],
            "chat": lambda r: ["chat", "--base", "tiny-random-llama", f"--adapter={r}"],
            "search": lambda r: ["search", "--", r],
        }
        before = _snapshot(store_root, outside)
        for label, make in commands.items():
            for ref in refs:
                tried += 1
                err, out = io.StringIO(), io.StringIO()
                old_stdin = sys.stdin
                sys.stdin = io.StringIO("")
                try:
                    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                        rc = main(make(ref))
                except SystemExit as exc:  # argparse refusing the arguments
                    rc = int(exc.code or 0)
                finally:
                    sys.stdin = old_stdin
                lines = [ln for ln in err.getvalue().replace("\r", "\n").splitlines() if ln.startswith("adapterhub: error")]
                problem = None
                if label == "search":
                    problem = None if rc == 0 or len(lines) == 1 else f"search exited {rc} with {len(lines)} error lines"
                elif rc == 0:
                    problem = "accepted"
                elif len(lines) != 1 or "Traceback" in err.getvalue():
                    problem = f"{len(lines)} error lines: {err.getvalue()[-300:]!r}"
                elif "unexpected" in lines[0]:
                    problem = f"untyped error: {lines[0][:300]!r}"
                now = _snapshot(store_root, outside)
                if now != before:
                    problem = (problem or "") + f" store/outside changed: {sorted(set(now) ^ set(before))[:3] or 'contents'}"
                    before = now
                if problem:
                    failures.append({"command": label, "ref": repr(ref), "problem": problem})
                else:
                    per_command[label] += 1
            print(f"  names {label}: {per_command[label]}/{len(refs)} refused correctly", file=sys.stderr)

        api_ok: Counter[str] = Counter()
        fuzz = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(refs) | st.lists(
            st.sampled_from(["..", ".", "a", "b1", "/", "\\", "%2e", "\x00", "ｘ", "@", ":", "1.0.0", "~", "-", "é"]), max_size=8
        ).map("".join)

        @settings(max_examples=args.names_fuzz, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(fuzz)
        def api(text: str) -> None:
            for op_name, op in (("pull", reg.pull), ("show", reg.show), ("verify", reg.verify),
                                ("tag", lambda r: reg.tag(r, "t")), ("evaluation", lambda r: reg.attach_evaluation(r, {"x": 1}))):
                try:
                    res = op(text)
                    if isinstance(res, Path) and not res.resolve().is_relative_to(store_root.resolve()):
                        failures.append({"command": f"api.{op_name}", "ref": repr(text), "problem": f"escaped: {res}"})
                        continue
                except (InvalidNameError, AdapterNotFoundError) as exc:
                    if "\n" in str(exc):
                        failures.append({"command": f"api.{op_name}", "ref": repr(text), "problem": "multi-line error"})
                        continue
                except Exception as exc:  # noqa: BLE001 - any other type is a failure
                    failures.append({"command": f"api.{op_name}", "ref": repr(text), "problem": f"{type(exc).__name__}: {exc}"[:300]})
                    continue
                api_ok[op_name] += 1

        api()
        api_tried = sum(api_ok.values()) + sum(1 for f in failures if f["command"].startswith("api."))
        if _snapshot(outside) != outside_before or (outside / "etc" / "passwd").read_text() != "root:x:0:0\n":
            failures.append({"command": "api", "ref": "-", "problem": "outside tree changed"})
        print(f"  names api fuzz: {sum(api_ok.values())}/{api_tried}", file=sys.stderr)
    finally:
        os.chdir(old_cwd)
        if old_home is None:
            os.environ.pop("ADAPTERHUB_HOME", None)
        else:
            os.environ["ADAPTERHUB_HOME"] = old_home
        shutil.rmtree(tmp, ignore_errors=True)
    py = _pytest(["tests/reliability/test_names.py"], {})
    return {
        "cases_tried": tried + api_tried + py["tests"] - py["skipped"],
        "ended_correctly": sum(per_command.values()) + sum(api_ok.values()) + py["passed"],
        "cli": {"corpus_size": len(refs), "commands": sorted(commands), "cases": tried, "correct_per_command": dict(per_command)},
        "api_fuzz": {"cases": api_tried, "correct_per_op": dict(api_ok)},
        "test_names_pytest": {k: v for k, v in py.items() if k != "per_test"},
        "failures": failures[:20], "failure_count": len(failures),
    }


# --- serving under churn --------------------------------------------------------------------------
def cat_serving_churn(args: argparse.Namespace) -> Result:
    threads = _pytest(["tests/reliability/test_serving_churn.py"], {"ADAPTERHUB_CHURN_REQUESTS": str(args.churn_requests)},
                      k="test_threads_never_mix_versions")
    churn = _load("tests/reliability/test_serving_churn.py")
    import torch

    from adapterhub.testing.adapters import make_adapter
    from adapterhub.testing.models import tiny_llama

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="soak-rss-"))
    try:
        model, _ = tiny_llama(seed=0)
        versions = []
        for i in range(6):  # the same six versions the churn test cycles through
            method = "lora" if i % 2 == 0 else "prefix-tuning"
            cfg = {"r": 4, "alpha": 8, "target_modules": "all-linear"} if method == "lora" else {"num_virtual_tokens": 4}
            make_adapter(method, model, tmp / f"1.0.{i}", config=cfg, name="churn", version=f"1.0.{i}", seed=100 + i, scale=3.0)
            versions.append(tmp / f"1.0.{i}")
        host = churn._host()
        names = churn.NAMES
        samples: list[tuple[int, int]] = []
        done = 0

        def cycle(n: int) -> None:
            nonlocal done
            for _ in range(n):
                host.load(versions[done % len(versions)], name=names[done % len(names)])
                if done % 10 == 0:
                    host.generate(["x"], [names[done % len(names)]], max_new_tokens=1)
                done += 1
                if done % 1000 == 0:
                    samples.append((done, churn._rss_kb()))

        t0 = time.perf_counter()
        cycle(100)
        early = churn._rss_kb()
        cycle(args.swaps)
        late = churn._rss_kb()
        swap_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    growth = late / early - 1
    rss_ok = growth <= 0.05
    # Cases: every generate request of the threaded run (the test passes only if each was
    # served by exactly one version, replayed identically, or refused as unloaded) plus
    # every swap of the RSS run (each must complete; the category also needs flat RSS).
    swaps = args.swaps + 100
    return {
        "cases_tried": args.churn_requests + swaps,
        "ended_correctly": (args.churn_requests if threads["passed"] == threads["tests"] == 1 else 0) + (swaps if rss_ok else 0),
        "threads_test": threads | {"requests": args.churn_requests, "threads": 4},
        "rss": {"swaps": swaps, "rss_kb_after_100": early, "rss_kb_after_all": late, "growth": round(growth, 4),
                "limit": 0.05, "ok": rss_ok, "samples_kb": samples, "seconds": round(swap_s, 1),
                "swaps_per_second": round(swaps / swap_s, 1)},
    }


CATEGORIES: dict[str, Callable[[argparse.Namespace], Result]] = {
    "hostile_files": cat_hostile_files,
    "no_code_execution": cat_no_code_execution,
    "names_paths": cat_names_paths,
    "plugin_failures": cat_plugin_failures,
    "registry_crash_points": cat_registry_crash_points,
    "concurrency_kill9": cat_concurrency_kill9,
    "serving_churn": cat_serving_churn,
}
SCALE_FLAGS = {
    "hostile_files": ["--hostile-cases"], "names_paths": ["--names-fuzz"], "concurrency_kill9": ["--concurrency-seconds"],
    "serving_churn": ["--churn-requests", "--swaps"],
}


def table(doc: dict[str, Any]) -> str:
    """The Markdown table RELIABILITY.md quotes, straight from the results file."""
    rows = ["| category | cases tried | ended correctly | duration | command |", "|---|---:|---:|---:|---|"]
    for name, r in doc.get("categories", {}).items():
        rows.append(f"| {name} | {r['cases_tried']:,} | {r['ended_correctly']:,} | {r['duration_s']} s | `{r['command']}` |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--table", action="store_true", help="print the Markdown table of --out and exit")
    parser.add_argument("--only", help=f"comma-separated categories ({', '.join(CATEGORIES)})")
    parser.add_argument("--hostile-cases", type=int, default=12_000)
    parser.add_argument("--names-fuzz", type=int, default=2_000)
    parser.add_argument("--concurrency-seconds", type=float, default=60.0)
    parser.add_argument("--churn-requests", type=int, default=1_000)
    parser.add_argument("--swaps", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return 0
    chosen = args.only.split(",") if args.only else list(CATEGORIES)
    unknown = [c for c in chosen if c not in CATEGORIES]
    if unknown:
        parser.error(f"unknown categories: {', '.join(unknown)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("ADAPTERHUB_MODEL_CACHE", str(REPO / ".cache" / "models"))
    os.environ.setdefault("ADAPTERHUB_HOME", tempfile.mkdtemp(prefix="soak-home-"))

    doc: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    doc.setdefault("categories", {})
    import torch

    doc["benchmark"] = "soak"
    doc["machine"] = {
        "python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
        "cpus": os.cpu_count(), "note": "shared 2-core machine (~8 engineers); durations are noisy, counts are exact",
    }
    bad = 0
    for name in chosen:
        print(f"== {name}", file=sys.stderr)
        t0 = time.perf_counter()
        try:
            res = CATEGORIES[name](args)
        except Exception as exc:  # noqa: BLE001 - a crashed category is recorded, the rest still run
            res = {"cases_tried": 0, "ended_correctly": 0, "crashed": f"{type(exc).__name__}: {exc}"[:500]}
        flags = " ".join(f"{f} {getattr(args, f[2:].replace('-', '_'))}" for f in SCALE_FLAGS.get(name, []))
        res["command"] = f".venv/bin/python benchmarks/soak.py --only {name}" + (f" {flags}" if flags else "")
        res["duration_s"] = round(time.perf_counter() - t0, 1)
        res["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        ok = res["cases_tried"] > 0 and res["ended_correctly"] == res["cases_tried"]
        res["ok"] = ok
        bad += not ok
        doc["categories"][name] = res
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2, ensure_ascii=True) + "\n")  # after each: a crash keeps the rest
        print(f"   {name}: {res['ended_correctly']}/{res['cases_tried']} ended correctly in {res['duration_s']} s", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
