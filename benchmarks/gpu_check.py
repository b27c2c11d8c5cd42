"""GPU check: correctness and the hot-swap table on CUDA in bf16, adapterhub beside peft.

Installs nothing and reaches no network. On a GPU machine:

    bash benchmarks/gpu_check.sh            # ≈ 2–4 minutes on one H100

It runs on CPU too (``--device cpu --layers 2``), which is how the test suite keeps it
from rotting. Writes ``benchmarks/results/gpu_check-<device>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"
SHAPE = {"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3,
         "vocab_size": 49152, "max_position_embeddings": 2048, "tie_word_embeddings": True}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_ms(fn: Callable[[], object], device: str, repeats: int) -> float:
    fn()
    _sync(device)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--big-seq", type=int, default=512, help="sequence length of the 16-row compute-bound batch")
    ap.add_argument("--small", action="store_true", help="tiny widths (CPU smoke test of the script itself)")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available on this machine", file=sys.stderr)
        return 2
    from transformers import LlamaConfig, LlamaForCausalLM

    from adapterhub.host import BASE, AdapterHost
    from adapterhub.protocols.basemodel import LoadedBase
    from adapterhub.testing.adapters import make_adapter
    from adapterhub.testing.models import byte_tokenizer

    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    shape = dict(SHAPE)
    if args.small:
        shape.update(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, vocab_size=1024)
    cpu_model = LlamaForCausalLM(LlamaConfig(**shape, num_hidden_layers=args.layers)).eval()
    tmp = Path(tempfile.mkdtemp())
    specs = {
        "lora-all-r16": ("lora", {"r": 16, "alpha": 32, "target_modules": "all-linear"}),
        "lora-qv-r8": ("lora", {"r": 8, "alpha": 16}),
        "prefix-20": ("prefix-tuning", {"num_virtual_tokens": 20}),
        "sel-norms": ("layer-selective", {"kinds": ["norm"]}),
    }
    for i, (name, (method, cfg)) in enumerate(specs.items()):
        make_adapter(method, cpu_model, tmp / name, base_name="gpu-check", config=cfg, name=name, seed=i, scale=0.02)
    for i in range(4, 20):  # extra LoRA adapters for the 16-row mixed batch
        make_adapter("lora", cpu_model, tmp / f"lora-{i}", base_name="gpu-check", config=specs["lora-all-r16"][1], name=f"lora-{i}", seed=i, scale=0.02)
    from adapterhub.fingerprint import fingerprint

    fp = fingerprint(cpu_model, "gpu-check")  # adapters are fingerprinted in fp32
    model = copy.deepcopy(cpu_model).to(device=args.device, dtype=dtype)
    host = AdapterHost(LoadedBase(name="gpu-check", model=model, tokenizer=byte_tokenizer()), device=args.device, dtype=dtype)
    host._fingerprint = fp
    t0 = time.perf_counter()
    for name in specs:
        host.load(tmp / name, name=name)
    for i in range(4, 20):
        host.load(tmp / f"lora-{i}", name=f"lora-{i}")
    load_all_s = time.perf_counter() - t0

    # --- correctness: mixed batch equals rows alone (bf16 tolerance), failed swap inert ------
    prompts = ["a short one", "a somewhat longer prompt for padding", "x", "the movie was great fun"]
    rows = ["lora-all-r16", "prefix-20", "sel-norms", BASE]
    mixed = host.logits(prompts, rows)
    alone = [host.logits([p], [r])[0] for p, r in zip(prompts, rows, strict=True)]
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    diffs = [float((a - b).abs().max()) for a, b in zip(mixed, alone, strict=True)]
    ok_mixed = all(d <= tol for d in diffs)
    before = host.logits(prompts[:1], ["lora-all-r16"])[0]
    from adapterhub.artifact import write_adapter
    from adapterhub.errors import IncompatibleAdapterError
    from adapterhub.manifest import read_manifest
    from adapterhub.safeio import load_safetensors

    bad = load_safetensors(tmp / "lora-all-r16" / "adapter.safetensors")
    last = sorted(bad)[-1]
    bad[last] = torch.zeros(tuple(s + 1 for s in bad[last].shape))
    write_adapter(tmp / "bad", read_manifest(tmp / "lora-all-r16").model_dump(exclude={"files"}), bad)
    try:
        host.load(tmp / "bad", name="lora-all-r16")
        ok_failed_swap = False
    except IncompatibleAdapterError:
        ok_failed_swap = torch.equal(before, host.logits(prompts[:1], ["lora-all-r16"])[0])

    # --- timings: adapterhub beside peft on the same weights ---------------------------------
    ids = torch.randint(0, 1000, (4, 128), device=args.device)
    ids16 = torch.randint(0, 1000, (16, 128), device=args.device)
    rt = host._runtimes["lora"]
    uid = {n: host.entry(n).uid for n in [*specs, *(f"lora-{i}" for i in range(4, 20))]}
    lora16 = ["lora-all-r16", *(f"lora-{i}" for i in range(4, 19))]

    def fwd(rows_: list[str | None], x: torch.Tensor) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad(), rt.route([uid[r] if r else None for r in rows_], {"input_ids": x}) as kw:
                return model(**kw).logits
        return run

    timings = {
        "base4_ms": median_ms(fwd([None] * 4, ids), args.device, args.repeats),
        "one4_ms": median_ms(fwd(["lora-all-r16"] * 4, ids), args.device, args.repeats),
        "mixed4_ms": median_ms(fwd(lora16[:4], ids), args.device, args.repeats),
        "one16_ms": median_ms(fwd(["lora-all-r16"] * 16, ids16), args.device, args.repeats),
        "mixed16_ms": median_ms(fwd(lora16, ids16), args.device, args.repeats),
    }
    # 4x128 on a GPU is launch-bound (every adapted linear adds kernels); a 16x512 batch shows
    # the overhead where the matrix work dominates.
    big = torch.randint(0, 1000, (16, args.big_seq), device=args.device)
    timings["base16_big_ms"] = median_ms(fwd([None] * 16, big), args.device, args.repeats)
    timings["one16_big_ms"] = median_ms(fwd(["lora-all-r16"] * 16, big), args.device, args.repeats)
    timings["mixed16_big_ms"] = median_ms(fwd(lora16, big), args.device, args.repeats)
    flip = [0]

    def switch() -> None:
        flip[0] ^= 1
        with rt.route([uid[lora16[flip[0]]]] * 4, {"input_ids": ids}):
            pass

    timings["switch_ms"] = median_ms(switch, args.device, args.repeats * 10)
    timings["cold_load_ms"] = median_ms(lambda: (host.load(tmp / "lora-5", name="cold"), host.unload("cold")), args.device, max(5, args.repeats // 2))

    from peft import LoraConfig, get_peft_model

    pm = get_peft_model(copy.deepcopy(cpu_model), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"), adapter_name="a0")
    pm.add_adapter("a1", LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    for n in ("a2", "a3"):
        pm.add_adapter(n, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    pm = pm.to(device=args.device, dtype=dtype).eval()
    pflip = [0]

    def pswitch() -> None:
        pflip[0] ^= 1
        pm.set_adapter(f"a{pflip[0]}")

    def pfwd(**kw: Any) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return pm(input_ids=ids, **kw).logits
        return run

    peft = {
        "set_adapter_ms": median_ms(pswitch, args.device, args.repeats),
        "one4_ms": median_ms(pfwd(), args.device, args.repeats),
        "mixed4_ms": median_ms(pfwd(adapter_names=["a0", "a1", "a2", "a3"]), args.device, args.repeats),
    }
    with torch.no_grad():
        peft["one16_big_ms"] = median_ms(lambda: pm(input_ids=big).logits, args.device, args.repeats)
        peft["mixed16_big_ms"] = median_ms(lambda: pm(input_ids=big, adapter_names=[f"a{i % 4}" for i in range(16)]).logits,
                                           args.device, args.repeats)
    doc = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
        "dtype": args.dtype, "layers": args.layers, "big_batch": [16, args.big_seq], "repeats": args.repeats, "torch": torch.__version__,
        "correct": {"mixed_equals_alone": ok_mixed, "max_abs_diffs": diffs, "tolerance": tol, "failed_swap_inert": ok_failed_swap},
        "load_20_adapters_s": load_all_s,
        "adapterhub": timings,
        "peft": peft,
        "ratios": {
            "one_over_base": timings["one4_ms"] / timings["base4_ms"],
            "mixed4_over_base": timings["mixed4_ms"] / timings["base4_ms"],
            "mixed16_over_one16": timings["mixed16_ms"] / timings["one16_ms"],
            "peft_mixed4_over_peft_one": peft["mixed4_ms"] / peft["one4_ms"],
            "big_one_over_base": timings["one16_big_ms"] / timings["base16_big_ms"],
            "big_mixed16_over_base": timings["mixed16_big_ms"] / timings["base16_big_ms"],
            "big_mixed16_over_one16": timings["mixed16_big_ms"] / timings["one16_big_ms"],
            "big_peft_mixed16_over_base": peft["mixed16_big_ms"] / timings["base16_big_ms"],
        },
    }
    out = args.out or RESULTS / f"gpu_check-{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0 if ok_mixed and ok_failed_swap else 1


if __name__ == "__main__":
    raise SystemExit(main())
