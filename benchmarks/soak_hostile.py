"""Soak test: tens of thousands of hostile weights files, manifests and adapter dirs.

Same generators and oracles as ``tests/reliability/test_hostile_files.py``
(:mod:`adapterhub.testing.hostile`), seeded and many more cases:

* weights files through the in-memory reader and through the file-path reader (where
  the header-only ``inspect_safetensors`` must agree with the full load);
* manifests (unknown fields/versions, huge strings, bad types, noise, truncation);
* damaged adapter directories read with ``read_adapter`` (truncated, flipped, appended,
  foreign, missing or symlinked weights; hostile or lying manifests);
* a few large files (8 MiB of tensors, then truncated / flipped / trailing bytes) to show
  refusal time stays bounded by what is read, not by what a header claims.

Any contract violation (an untyped exception, a multi-line message, a known-bad input
accepted, a valid control refused, accepted bytes that differ from the header) is
recorded and makes the exit status 1.

    .venv/bin/python benchmarks/soak_hostile.py [--cases 12000] [--seed 0]

Writes ``benchmarks/results/soak_hostile.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import safetensors
import torch
from tqdm import tqdm

from adapterhub.artifact import read_adapter, write_adapter
from adapterhub.manifest import BaseFingerprint
from adapterhub.safeio import save_safetensors
from adapterhub.testing import hostile

RESULTS = Path(__file__).resolve().parent / "results"
MIX = (("weights_bytes", 0.55), ("weights_file", 0.15), ("manifest", 0.2), ("adapter_dir", 0.1))


def _pristine(root: Path) -> Path:
    base = BaseFingerprint(name="tiny", architecture="LlamaForCausalLM", model_type="llama", weights_sha256="ab" * 32, num_parameters=1, dtype="float32")
    out = root / "pristine"
    g = torch.Generator().manual_seed(0)
    write_adapter(
        out,
        {"name": "soak", "method": "lora", "method_kind": "reparameterization", "base": base},
        {"layer.lora_A": torch.randn(4, 16, generator=g), "layer.lora_B": torch.randn(16, 4, generator=g)},
    )
    return out


def _large_cases(root: Path, rng: random.Random) -> list[dict[str, Any]]:
    """A few 8 MiB files, damaged; refusal time must stay small and bounded."""
    path = root / "big.safetensors"
    save_safetensors({f"w{i}": torch.randn(512, 512) for i in range(8)}, path)
    good = path.read_bytes()
    out = []
    for kind, data, expect in (
        ("valid", good, hostile.ACCEPT),
        ("truncated", good[: len(good) - rng.randint(1, 1 << 20)], hostile.REFUSE),
        ("trailing", good + b"\x00" * 4096, hostile.REFUSE),
        ("header_claims_100MB", (10**8 + 1).to_bytes(8, "little") + good[8:], hostile.REFUSE),
    ):
        t0 = time.perf_counter()
        outcome = hostile.check_safetensors_file(root / f"big-{kind}.safetensors", data, expect)
        out.append({"case": kind, "bytes": len(data), "outcome": outcome, "seconds": round(time.perf_counter() - t0, 4)})
    return out


def run(cases: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="adapterhub-soak-"))
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    reasons: collections.Counter[str] = collections.Counter()
    times: dict[str, list[float]] = collections.defaultdict(list)
    violations: list[dict[str, str]] = []
    families = [f for f, _ in MIX]
    weights = [w for _, w in MIX]
    started = time.perf_counter()
    try:
        pristine = _pristine(root)
        for i in tqdm(range(cases), desc="hostile inputs", file=sys.stderr, mininterval=2.0):
            family = rng.choices(families, weights)[0]
            t0 = time.perf_counter()
            try:
                if family in ("weights_bytes", "weights_file"):
                    category, expect, data = hostile.hostile_safetensors(rng)
                    if family == "weights_bytes":
                        outcome = hostile.check_safetensors_bytes(data, expect, f"{category}.safetensors")
                    else:
                        outcome = hostile.check_safetensors_file(root / f"case-{i % 64}.safetensors", data, expect)
                    if outcome != "accepted":
                        reasons[outcome] += 1
                elif family == "manifest":
                    category, expect, data = hostile.hostile_manifest(rng)
                    outcome = hostile.check_manifest_bytes(data, expect, f"{category}/manifest.json")
                else:
                    case = root / f"dir-{i}"
                    shutil.copytree(pristine, case / "adapter")
                    category, must_refuse = hostile.mutate_adapter_dir(rng, case / "adapter")
                    outcome = hostile.check_adapter_dir(case / "adapter", must_refuse, read_adapter)
                    shutil.rmtree(case, ignore_errors=True)
            except hostile.ContractViolation as exc:
                category, outcome = locals().get("category", "?"), "VIOLATION"
                violations.append({"case": str(i), "family": family, "category": str(category), "error": str(exc)[:500]})
            times[family].append(time.perf_counter() - t0)
            counts[f"{family}/{category}"]["accepted" if outcome == "accepted" else ("violation" if outcome == "VIOLATION" else "refused")] += 1
        large = _large_cases(root, rng)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    wall = time.perf_counter() - started

    def stats(xs: list[float]) -> dict[str, float]:
        xs = sorted(xs)
        return {
            "n": len(xs),
            "mean_ms": round(1000 * statistics.fmean(xs), 3),
            "p50_ms": round(1000 * xs[len(xs) // 2], 3),
            "p99_ms": round(1000 * xs[min(len(xs) - 1, int(len(xs) * 0.99))], 3),
            "max_ms": round(1000 * xs[-1], 3),
        }

    return {
        "benchmark": "soak_hostile",
        "cases": cases,
        "seed": seed,
        "violations": len(violations),
        "violation_examples": violations[:20],
        "wall_seconds": round(wall, 2),
        "cases_per_second": round(cases / wall, 1),
        "by_category": {k: dict(v) for k, v in sorted(counts.items())},
        "weights_refusal_reasons": dict(reasons.most_common(40)),
        "latency": {k: stats(v) for k, v in sorted(times.items())},
        "large_files": large,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "safetensors": safetensors.__version__,
            "note": "shared 2-core machine; timings are noisy, counts are exact",
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=12_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "soak_hostile.json")
    args = parser.parse_args(argv)
    result = run(args.cases, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{result['cases']} hostile cases in {result['wall_seconds']} s "
        f"({result['cases_per_second']}/s), violations: {result['violations']}; wrote {args.out}"
    )
    for family, s in result["latency"].items():
        print(f"  {family:14s} n={s['n']:6d}  p50 {s['p50_ms']:8.3f} ms  p99 {s['p99_ms']:8.3f} ms  max {s['max_ms']:8.3f} ms")
    for row in result["large_files"]:
        print(f"  large {row['case']:20s} {row['bytes']:>10d} B  {row['outcome']:28s} {row['seconds']} s")
    return 1 if result["violations"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
