"""Cold load of one LoRA adapter from disk, over reading + hashing its bytes.

The one row of ``benchmarks/hotswap.py`` that depends on how many cores the process
may use: ``AdapterHost.load`` hashes the weights on a helper thread while it parses,
plans and stages the copy (see ``docs/method-lora.md``), so on one core that work is
added to the hash instead of hidden behind it. Run it as is and under ``taskset -c 0``:

    .venv/bin/python benchmarks/cold_load.py [--repeats 30]
    taskset -c 0 .venv/bin/python benchmarks/cold_load.py

Each run records its result in ``benchmarks/results/cold_load.json`` under the model
and the number of cores it was allowed (``random-1core``, ``smollm2-2core``, ...). The floor is measured in the same
process, single-threaded: ``sha256(path.read_bytes())``. peft's ``load_adapter`` of the
same weights is measured too (medians over ``--repeats``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hotswap  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--model", choices=["random", "smollm2"], default="random")
    ap.add_argument("--adapter", choices=["all-r16", "qv-r8"], default="all-r16",
                    help="LoRA r16 on every linear (19.6 MB) or r8 on q/v (1.86 MB)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    base = hotswap._base(args.model)
    with tempfile.TemporaryDirectory() as d:
        row = hotswap.cold_load(base, Path(d), args.repeats, hotswap.ALL_R16 if args.adapter == "all-r16" else hotswap.QV_R8)
    row.update({"cores": cores, "model": args.model, "adapter": args.adapter, "repeats": args.repeats, "statistic": "median",
                "loadavg": os.getloadavg(), "measured": time.strftime("%Y-%m-%d %H:%M:%S")})
    out = hotswap.RESULTS / "cold_load.json"
    doc = json.loads(out.read_text()) if out.exists() else {}
    # all-r16 keeps its original keys ("random-2core"); other adapters are named in the key.
    suffix = "" if args.adapter == "all-r16" else f"-{args.adapter}"
    doc[f"{args.model}-{cores}core{suffix}"] = row
    out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
