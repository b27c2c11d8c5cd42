"""Hot-swap benchmark: adapterhub's AdapterHost beside peft, same model, same run.

Rows (issue 6): switching between resident adapters, cold load of an adapter from disk
(vs peft ``load_adapter`` and vs the physical floor of reading + hashing its bytes),
forward overhead of one unmerged adapter and of mixed batches (4 rows/4 adapters and 16
rows/16 adapters; from ``benchmarks/lora_runtime.py``), RSS with 100 all-linear r16
adapters resident, and prefix-tuning / layer-selective switch times.

Model: SmolLM2-135M's shape with random weights (``--model random``, default) or the
real packaged model (``--model smollm2``), fp32 on CPU, ``--threads`` threads. Every
figure is a median over repeats; adapterhub and peft are measured in the same process.

    .venv/bin/python benchmarks/hotswap.py [--json] [--repeats 5] [--model random|smollm2]

Writes ``benchmarks/results/hotswap[-smollm2].{json,md}``; with ``--json`` the last
stdout line is one JSON object with ``swap_ms``, ``peft_set_adapter_ms``,
``cold_load_ms``, ``peft_load_adapter_ms``, ``mixed4_over_base``,
``peft_mixed4_over_base`` and more.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lora_runtime import CONFIGS, bench_config, build_base, median_call_ms  # noqa: E402

from adapterhub.host import AdapterHost  # noqa: E402
from adapterhub.protocols.basemodel import LoadedBase  # noqa: E402
from adapterhub.testing.adapters import make_adapter  # noqa: E402
from adapterhub.testing.models import byte_tokenizer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ALL_R16 = {"r": 16, "alpha": 32, "target_modules": "all-linear"}
QV_R8 = {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}


def _base(kind: str) -> LoadedBase:
    if kind == "smollm2":
        from adapterhub.basemodels import load_base

        return load_base("smollm2-135m-instruct")
    return LoadedBase(name="random-smollm2-shape", model=build_base(), tokenizer=byte_tokenizer())


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def read_and_hash_ms(path: Path, repeats: int) -> float:
    def run() -> None:
        hashlib.sha256(path.read_bytes()).hexdigest()

    return median_call_ms(run, repeats)


def cold_load(base: LoadedBase, tmp: Path, repeats: int, config: dict[str, Any] = ALL_R16) -> dict[str, Any]:
    """host.load from disk (read, verify sha256, fingerprint check, plan, apply) vs peft."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    adir = tmp / "adapter"
    make_adapter("lora", base.model, adir, base_name=base.name, config=config, name="bench", version="1.0.0", seed=1, scale=0.02)
    # peft's copy of the base is taken before the host installs its serving layers (their
    # router holds a lock and can't be deep-copied).
    pcfg = PeftLoraConfig(r=config["r"], lora_alpha=config["alpha"], lora_dropout=0.0, target_modules=config["target_modules"])
    pmodel = get_peft_model(copy.deepcopy(base.model), pcfg, adapter_name="default")
    host = AdapterHost(base)
    host.fingerprint  # noqa: B018 - hash the base once, outside the timing
    counter = [0]

    def ours() -> None:
        counter[0] += 1
        host.load(adir, name=f"cold{counter[0]}")
        host.unload(f"cold{counter[0]}")

    ours_ms = median_call_ms(ours, repeats)
    weights = adir / "adapter.safetensors"
    floor_ms = read_and_hash_ms(weights, repeats)

    # peft: the same weights saved in its own format, loaded with load_adapter.
    pdir = tmp / "peft-adapter"
    pmodel.save_pretrained(str(pdir))
    pc = [0]

    def theirs() -> None:
        pc[0] += 1
        name = f"p{pc[0]}"
        pmodel.load_adapter(str(pdir), adapter_name=name)
        pmodel.delete_adapter(name)

    peft_ms = median_call_ms(theirs, repeats)
    return {
        "adapter_bytes": weights.stat().st_size,
        "cold_load_ms": ours_ms,
        "read_hash_ms": floor_ms,
        "cold_over_read_hash": ours_ms / floor_ms,
        "peft_load_adapter_ms": peft_ms,
        "peft_over_ours": peft_ms / ours_ms,
    }


def other_kinds(base: LoadedBase, tmp: Path, repeats: int) -> dict[str, Any]:
    """Switch cost of prefix tuning and layer-selective adapters inside the host."""
    host = AdapterHost(base)
    out: dict[str, Any] = {}
    specs = {
        "prefix-tuning": {"num_virtual_tokens": 20},
        "layer-selective": {"layers": "20-29", "kinds": ["norm"]},
        "layer-selective-mlp": {"layers": "29", "modules": ["*mlp*"]},
    }
    ids = torch.randint(0, 1000, (4, 128))
    mask = torch.ones_like(ids)
    for label, cfg in specs.items():
        method = "layer-selective" if label.startswith("layer") else label
        for i in (0, 1):
            make_adapter(method, base.model, tmp / f"{label}-{i}", base_name=base.name, config=cfg, name=f"{label}-{i}", seed=10 + i, scale=0.01)
            host.load(tmp / f"{label}-{i}")
        rt = host._runtimes[method]
        uids = [host.entry(f"{label}-{i}").uid for i in (0, 1)]
        flip = [0]

        def switch(rt: Any = rt, uids: list[str] = uids, flip: list[int] = flip) -> None:
            flip[0] ^= 1
            with rt.route([uids[flip[0]]] * 4, {"input_ids": ids, "attention_mask": mask}):
                pass

        out[label] = {
            "switch_ms": median_call_ms(switch, max(50, repeats * 10)),
            "adapter_bytes": host.entry(f"{label}-0").nbytes,
        }
    return out


def rss_many(kind: str, n: int) -> dict[str, Any]:
    """RSS of a host with ``n`` all-linear r16 adapters resident (fresh subprocess)."""
    code = f"""
import json, sys, tempfile, torch
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
import hotswap
torch.set_num_threads(1)
base = hotswap._base({kind!r})
from adapterhub.host import AdapterHost
from adapterhub.testing.adapters import make_adapter
tmp = Path(tempfile.mkdtemp())
make_adapter("lora", base.model, tmp / "a", base_name=base.name, config=hotswap.ALL_R16, name="a", seed=3, scale=0.02)
host = AdapterHost(base)
host.fingerprint
import gc; gc.collect()
before = hotswap._rss_mb()
for i in range({n}):
    host.load(tmp / "a", name=f"a{{i}}")
gc.collect()
after = hotswap._rss_mb()
nbytes = sum(e["bytes"] for e in host.adapters())
print(json.dumps({{"rss_base_mb": before, "rss_loaded_mb": after, "adapters_mb": nbytes / 2**20}}))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    doc["n"] = n
    doc["rss_over_base_plus_adapters"] = (doc["rss_loaded_mb"] - doc["rss_base_mb"]) / doc["adapters_mb"]
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", choices=["random", "smollm2"], default="random")
    ap.add_argument("--rss-adapters", type=int, default=100)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--rss-only", action="store_true", help="re-measure only the RSS row of an existing result file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.rss_only:
        return _refresh_rss(args)
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    base = _base(args.model)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        forward = bench_config(base.model, "all-r16", CONFIGS["all-r16"], args.repeats)
        forward_qv = bench_config(base.model, "qv-r8", CONFIGS["qv-r8"], args.repeats)
        cold = cold_load(base, tmp, max(args.repeats, 10))
        kinds = other_kinds(base, tmp, args.repeats)
    rss = rss_many(args.model, args.rss_adapters)
    r = forward["ratios"]
    headline = {
        "swap_ms": forward["ours_switch_ms"],
        "peft_set_adapter_ms": forward["peft_set_adapter_ms"],
        "swap_ms_qv_r8": forward_qv["ours_switch_ms"],
        "peft_set_adapter_ms_qv_r8": forward_qv["peft_set_adapter_ms"],
        "cold_load_ms": cold["cold_load_ms"],
        "peft_load_adapter_ms": cold["peft_load_adapter_ms"],
        "cold_over_read_hash": cold["cold_over_read_hash"],
        "one_over_base": r["ours_one_over_base"],
        "peft_one_over_base": r["peft_one_over_base"],
        "mixed4_over_base": r["ours_mixed4_over_base"],
        "peft_mixed4_over_base": r["peft_mixed4_over_base"],
        "mixed16_over_one16": r["ours_mixed16_over_one16"],
        "mixed16_over_peft_mixed16": r["ours_mixed16_over_peft_mixed16"],
        "rss_over_adapters_bytes": rss["rss_over_base_plus_adapters"],
        "prefix_switch_ms": kinds["prefix-tuning"]["switch_ms"],
        "selective_switch_ms": kinds["layer-selective"]["switch_ms"],
        "selective_mlp_switch_ms": kinds["layer-selective-mlp"]["switch_ms"],
    }
    doc = {
        "benchmark": "hotswap",
        "model": args.model,
        "machine": {
            "cpu_count": os.cpu_count(), "torch_threads": args.threads, "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(), "platform": platform.platform(), "torch": torch.__version__,
            "device": "cpu", "dtype": "float32",
        },
        "repeats": args.repeats,
        "statistic": "median",
        "seconds": round(time.perf_counter() - t0, 1),
        "headline": headline,
        "lora_all_r16": forward,
        "lora_qv_r8": forward_qv,
        "cold_load": cold,
        "other_kinds": kinds,
        "rss": rss,
    }
    suffix = "" if args.model == "random" else f"-{args.model}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"hotswap{suffix}.json").write_text(json.dumps(doc, indent=2) + "\n")
    md = _markdown(doc)
    (RESULTS / f"hotswap{suffix}.md").write_text(md)
    print(md, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(headline))
    return 0


def _refresh_rss(args: argparse.Namespace) -> int:
    """Re-run only the 100-adapter RSS measurement and rewrite the result files."""
    suffix = "" if args.model == "random" else f"-{args.model}"
    path = RESULTS / f"hotswap{suffix}.json"
    doc = json.loads(path.read_text())
    doc["rss"] = rss_many(args.model, args.rss_adapters)
    doc["rss"]["measured"] = time.strftime("%Y-%m-%d %H:%M:%S") + " (--rss-only)"
    doc["headline"]["rss_over_adapters_bytes"] = doc["rss"]["rss_over_base_plus_adapters"]
    path.write_text(json.dumps(doc, indent=2) + "\n")
    (RESULTS / f"hotswap{suffix}.md").write_text(_markdown(doc))
    print(json.dumps(doc["rss"]))
    return 0


def _markdown(doc: dict[str, Any]) -> str:
    h = doc["headline"]
    f = doc["lora_all_r16"]
    q = doc["lora_qv_r8"]
    c = doc["cold_load"]
    rows = [
        ("switch between resident adapters (ms), q/v r8 · all r16", f"{q['ours_switch_ms']:.4f} · {f['ours_switch_ms']:.4f}", f"{q['peft_set_adapter_ms']:.2f} · {f['peft_set_adapter_ms']:.2f}"),
        ("load all-linear r16 adapter from disk (ms)", f"{c['cold_load_ms']:.1f} ({c['cold_over_read_hash']:.2f}x read+hash {c['read_hash_ms']:.1f} ms)", f"{c['peft_load_adapter_ms']:.1f}"),
        ("forward, one unmerged adapter, over base: q/v r8 · all r16", f"{q['ratios']['ours_one_over_base']:.3f}x · {f['ratios']['ours_one_over_base']:.3f}x", f"{q['ratios']['peft_one_over_base']:.3f}x · {f['ratios']['peft_one_over_base']:.3f}x"),
        ("4 rows, 4 adapters, over base: q/v r8 · all r16", f"{q['ratios']['ours_mixed4_over_base']:.3f}x · {f['ratios']['ours_mixed4_over_base']:.3f}x", f"{q['ratios']['peft_mixed4_over_base']:.3f}x · {f['ratios']['peft_mixed4_over_base']:.3f}x"),
        ("16 rows/16 adapters over 16-row single (all r16)", f"{f['ratios']['ours_mixed16_over_one16']:.3f}x", f"{f['ratios']['peft_mixed16_over_one16']:.3f}x"),
        ("16 rows/16 adapters, ms (all r16)", f"{f['forward_ms']['ours_mixed16']:.0f}", f"{f['forward_ms']['peft_mixed16']:.0f}"),
        (f"{doc['rss']['n']} all-r16 adapters resident: RSS growth / adapter bytes", f"{doc['rss']['rss_over_base_plus_adapters']:.3f}x", "(not measured)"),
        ("prefix tuning switch (20 tokens) (ms)", f"{h['prefix_switch_ms']:.3f}", "n/a"),
        ("layer-selective switch, norms of layers 20-29 (ms)", f"{h['selective_switch_ms']:.3f}", "n/a"),
        ("layer-selective switch, MLP of layer 29 (ms)", f"{h['selective_mlp_switch_ms']:.3f}", "n/a"),
    ]
    m = doc["machine"]
    out = [
        f"Hot-swap benchmark ({doc['model']} SmolLM2-135M shape, CPU fp32, {m['torch_threads']} threads, "
        f"batch 4x128, median of {doc['repeats']}; load avg {m['loadavg_before'][0]:.1f} → {m['loadavg_after'][0]:.1f})",
        "",
        "| figure | adapterhub | peft (same run) |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
