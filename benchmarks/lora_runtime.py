"""LoRA serving micro-benchmark: adapterhub's LoraRuntime beside peft, same model, same run.

Model: a randomly initialised Llama of SmolLM2-135M's shape (hidden 576, 30 layers, 9
heads, 3 kv heads, intermediate 1536, vocab 49152), fp32 on CPU, 2 threads. Rows: a
batch of 4 x 128 tokens (and 16 x 128 for the 16-adapter row), for LoRA r=8 on q/v and
r=16 on all linear layers. Every figure is the median over ``--repeats`` rounds; inside
a round the variants run in rotating order, so drift in machine load hits all of them
alike (the machine is shared and noisy: read the ratios, not the absolute times).

Both wall time and process CPU time are recorded. On an oversubscribed machine the CPU
time is the steadier measure of work done, so the script sets ``OMP_WAIT_POLICY=PASSIVE``
(unless already set): waiting OpenMP threads then sleep instead of spinning, and CPU time
counts only real work. A "base again" variant is a noise control and should read 1.00x.

    .venv/bin/python benchmarks/lora_runtime.py [--repeats 5] [--layers 30] [--json]

Prints a table and writes ``benchmarks/results/lora_runtime.json``. The functions are
importable (``build_base``, ``random_adapter``, ``peft_twin``, ``interleaved_medians``)
for ``benchmarks/hotswap.py``.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP (see the module docstring).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from adapterhub.plugins.lora import LoraConfig, LoraMethod, LoraRuntime  # noqa: E402
from adapterhub.plugins.lora.config import expected_shapes  # noqa: E402
from adapterhub.plugins.lora.validation import targets_for  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

SMOL135M: dict[str, Any] = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
}

CONFIGS: dict[str, LoraConfig] = {
    "qv-r8": LoraConfig(r=8, alpha=16, target_modules=("q_proj", "v_proj")),
    "all-r16": LoraConfig(r=16, alpha=32, target_modules="all-linear"),
}


# --- building blocks (imported by benchmarks/hotswap.py) -------------------------------------
def build_base(seed: int = 0, num_layers: int = 30, dtype: torch.dtype = torch.float32) -> Any:
    """A random Llama with SmolLM2-135M's shape, eval mode, frozen."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(**{**SMOL135M, "num_hidden_layers": num_layers})
    model: Any = LlamaForCausalLM(cfg)
    model = model.to(dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def random_adapter(model: torch.nn.Module, cfg: LoraConfig, seed: int, std: float = 0.02) -> dict[str, torch.Tensor]:
    """Random LoRA tensors for ``cfg`` on ``model`` in the stored key convention."""
    gen = torch.Generator().manual_seed(seed)
    shapes = expected_shapes(cfg, targets_for(model, cfg))
    return {k: torch.randn(shape, generator=gen) * std for k, shape in shapes.items()}


def adapter_nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def peft_twin(model: torch.nn.Module, cfg: LoraConfig, adapters: dict[str, dict[str, torch.Tensor]]) -> Any:
    """A deep copy of ``model`` as a peft LoraModel holding the same adapters (same weights)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    targets = "all-linear" if cfg.target_modules == "all-linear" else list(cfg.target_modules or ())
    pcfg = PeftLoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=0.0, target_modules=targets)
    names = list(adapters)
    pmodel = get_peft_model(copy.deepcopy(model), pcfg, adapter_name=names[0])
    for name in names[1:]:
        pmodel.add_adapter(name, pcfg)
    inner: Any = pmodel.base_model.model
    with torch.no_grad():
        for name, tensors in adapters.items():
            for key, t in tensors.items():
                path, _, which = key.rpartition(".")
                getattr(inner.get_submodule(path), which)[name].weight.copy_(t)
    pmodel.set_adapter(names[0])
    return pmodel.eval()


def interleaved_timings(
    variants: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, label: str = ""
) -> dict[str, dict[str, float]]:
    """Median wall and CPU seconds of each variant: ``{"wall": {...}, "cpu": {...}}``.

    Each round runs every variant once, in an order rotated by one per round.
    """
    from tqdm import tqdm

    names = list(variants)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    with tqdm(total=(warmup + repeats) * len(names), desc=label or "timing", file=sys.stderr, leave=False) as bar:
        for _ in range(warmup):
            for n in names:
                variants[n]()
                bar.update()
        for i in range(repeats):
            order = names[i % len(names):] + names[: i % len(names)]
            for n in order:
                c0, t0 = time.process_time(), time.perf_counter()
                variants[n]()
                wall[n].append(time.perf_counter() - t0)
                cpu[n].append(time.process_time() - c0)
                bar.update()
    return {
        "wall": {n: statistics.median(v) for n, v in wall.items()},
        "cpu": {n: statistics.median(v) for n, v in cpu.items()},
    }


def interleaved_medians(variants: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, label: str = "") -> dict[str, float]:
    """Median wall seconds of each variant (see :func:`interleaved_timings`)."""
    return interleaved_timings(variants, repeats, warmup, label)["wall"]


def median_call_ms(fn: Callable[[], object], repeats: int = 200) -> float:
    """Median wall time of a fast call, in milliseconds."""
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def routed_forward(model: Any, runtime: LoraRuntime, rows: Sequence[str | None], ids: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad(), runtime.route(list(rows), {"input_ids": ids}) as kw:
            return model(**kw).logits

    return run


def plain_forward(model: Any, ids: torch.Tensor, **kwargs: Any) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad():
            return model(input_ids=ids, **kwargs).logits

    return run


# --- one configuration -------------------------------------------------------------------------
def bench_config(base: Any, name: str, cfg: LoraConfig, repeats: int, seq: int = 128, focus: bool = False) -> dict[str, Any]:
    """All figures for one LoRA config; ``focus``: only the 4-row forwards (more rounds fit)."""
    n_adapters = 16
    adapters = {f"{name}-{i}": random_adapter(base, cfg, seed=1000 + i) for i in range(n_adapters)}
    ids = list(adapters)
    gen = torch.Generator().manual_seed(0)
    x4 = torch.randint(0, SMOL135M["vocab_size"], (4, seq), generator=gen)
    x16 = torch.randint(0, SMOL135M["vocab_size"], (16, seq), generator=gen)

    ours = copy.deepcopy(base)
    rt = LoraMethod().runtime(ours)
    t0 = time.perf_counter()
    for aid, tensors in adapters.items():
        rt.apply(rt.plan(aid, cfg, tensors))
    load16_ms = (time.perf_counter() - t0) * 1e3
    pmodel = peft_twin(base, cfg, adapters)

    # Correctness first: same rows, same weights, both tools (and the no-adapter row).
    rows4 = ids[:4]
    with torch.no_grad():
        a = routed_forward(ours, rt, rows4, x4)()
        b = plain_forward(pmodel, x4, adapter_names=rows4)()
    assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
    max_diff = float((a - b).abs().max())

    variants: dict[str, Callable[[], object]] = {
        "base4": plain_forward(base, x4),
        "base4_again": plain_forward(base, x4),  # noise control: should read 1.00x
        "ours_none4": routed_forward(ours, rt, [None] * 4, x4),
        "ours_one4": routed_forward(ours, rt, [ids[0]] * 4, x4),
        "ours_mixed4": routed_forward(ours, rt, rows4, x4),
        "peft_one4": plain_forward(pmodel, x4),
        "peft_mixed4": plain_forward(pmodel, x4, adapter_names=rows4),
        "ours_one16": routed_forward(ours, rt, [ids[0]] * 16, x16),
        "ours_mixed16": routed_forward(ours, rt, ids, x16),
        "peft_one16": plain_forward(pmodel, x16),
        "peft_mixed16": plain_forward(pmodel, x16, adapter_names=ids),
    }
    if focus:
        variants = {k: v for k, v in variants.items() if k.endswith("4") or k.endswith("4_again")}
    timings = interleaved_timings(variants, repeats, label=f"forward {name}")

    # Switching: ours = a new route (index), peft = set_adapter. Alternate two adapters.
    flip = [0]

    def ours_switch() -> None:
        flip[0] ^= 1
        with rt.route([ids[flip[0]]] * 4, {"input_ids": x4}):
            pass

    def ours_switch_mixed() -> None:
        flip[0] ^= 1
        with rt.route(ids[flip[0] : flip[0] + 4], {"input_ids": x4}):
            pass

    def peft_switch() -> None:
        flip[0] ^= 1
        pmodel.set_adapter(ids[flip[0]])

    # Hot swap with the weights in memory: plan + apply of a new id into a freed slot.
    spare = random_adapter(base, cfg, seed=99)
    swap_ids = ["swap-a", "swap-b"]
    rt.apply(rt.plan(swap_ids[0], cfg, spare))

    parts: dict[str, list[float]] = {"remove": [], "plan": [], "apply": []}

    def ours_swap() -> None:
        old, new = swap_ids
        t0 = time.perf_counter()
        rt.remove(old)
        t1 = time.perf_counter()
        plan = rt.plan(new, cfg, spare)
        t2 = time.perf_counter()
        rt.apply(plan)
        t3 = time.perf_counter()
        swap_ids.reverse()
        for k, v in (("remove", t1 - t0), ("plan", t2 - t1), ("apply", t3 - t2)):
            parts[k].append(v * 1e3)

    switch = {
        "ours_switch_ms": median_call_ms(ours_switch, 2000),
        "ours_switch_mixed_ms": median_call_ms(ours_switch_mixed, 2000),
        "peft_set_adapter_ms": median_call_ms(peft_switch, 50),
        "ours_plan_apply_ms": median_call_ms(ours_swap, 30),
        "ours_remove_plan_apply_split_ms": {k: statistics.median(v) for k, v in parts.items()},
    }
    return {
        "config": cfg.model_dump(mode="json"),
        "adapter_mb": adapter_nbytes(adapters[ids[0]]) / 1e6,
        "max_abs_logit_diff_vs_peft_mixed4": max_diff,
        "apply16_ms": load16_ms,
        "forward_ms": {k: v * 1e3 for k, v in timings["wall"].items()},
        "forward_cpu_ms": {k: v * 1e3 for k, v in timings["cpu"].items()},
        "ratios": forward_ratios(timings["wall"]),
        "ratios_cpu": forward_ratios(timings["cpu"]),
        **switch,
    }


RATIOS: dict[str, tuple[str, str]] = {
    "base_again_over_base": ("base4_again", "base4"),
    "ours_none_over_base": ("ours_none4", "base4"),
    "ours_one_over_base": ("ours_one4", "base4"),
    "peft_one_over_base": ("peft_one4", "base4"),
    "ours_mixed4_over_base": ("ours_mixed4", "base4"),
    "peft_mixed4_over_base": ("peft_mixed4", "base4"),
    "ours_mixed16_over_one16": ("ours_mixed16", "ours_one16"),
    "peft_mixed16_over_one16": ("peft_mixed16", "peft_one16"),
    "ours_mixed16_over_peft_mixed16": ("ours_mixed16", "peft_mixed16"),
    "ours_one_over_peft_one": ("ours_one4", "peft_one4"),
}


def forward_ratios(med: dict[str, float]) -> dict[str, float]:
    """Every ratio of :data:`RATIOS` whose two variants were measured."""
    return {k: med[a] / med[b] for k, (a, b) in RATIOS.items() if a in med and b in med}


def bench_train_step(base: Any, cfg: LoraConfig, repeats: int, batch: int = 4, seq: int = 128) -> dict[str, Any]:
    """One AdamW training step (forward with labels, backward, step) ours vs peft."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    ids = torch.randint(0, SMOL135M["vocab_size"], (batch, seq), generator=torch.Generator().manual_seed(1))
    ours = copy.deepcopy(base).train()
    adapter = LoraMethod().attach(ours, cfg)
    targets = "all-linear" if cfg.target_modules == "all-linear" else list(cfg.target_modules or ())
    theirs = get_peft_model(
        copy.deepcopy(base), PeftLoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets)
    ).train()

    def stepper(model: Any, params: list[torch.nn.Parameter]) -> Callable[[], object]:
        opt = torch.optim.AdamW(params, lr=1e-4)

        def step() -> object:
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

        return step

    peft_params = [p for p in theirs.parameters() if p.requires_grad]
    ours_params = adapter.trainable_parameters()
    assert sum(p.numel() for p in peft_params) == sum(p.numel() for p in ours_params)
    timings = interleaved_timings({"ours": stepper(ours, ours_params), "peft": stepper(theirs, peft_params)}, repeats, label="train step")
    med, cpu = timings["wall"], timings["cpu"]
    return {
        "config": cfg.model_dump(mode="json"),
        "trainable_params": sum(p.numel() for p in ours_params),
        "ours_step_s": med["ours"],
        "peft_step_s": med["peft"],
        "ours_over_peft": med["ours"] / med["peft"],
        "ours_step_cpu_s": cpu["ours"],
        "peft_step_cpu_s": cpu["peft"],
        "ours_over_peft_cpu": cpu["ours"] / cpu["peft"],
    }


def _ratio(key: str) -> Callable[[dict[str, Any]], str]:
    # "wall / cpu" medians, both as multiples of the reference
    return lambda r: f"{r['ratios'][key]:.3f}x / {r['ratios_cpu'][key]:.3f}x" if key in r["ratios"] else "-"


def _blank(r: dict[str, Any]) -> str:
    return ""


TABLE_ROWS: list[tuple[str, Callable[[dict[str, Any]], str], Callable[[dict[str, Any]], str]]] = [
    ("adapter size (MB)", lambda r: f"{r['adapter_mb']:.2f}", _blank),
    ("forward 4x128, base: wall / cpu (ms)", lambda r: f"{r['forward_ms']['base4']:.0f} / {r['forward_cpu_ms']['base4']:.0f}", _blank),
    ("noise control: base again over base", _ratio("base_again_over_base"), _blank),
    ("no-adapter rows over base", _ratio("ours_none_over_base"), _blank),
    ("one adapter over base", _ratio("ours_one_over_base"), _ratio("peft_one_over_base")),
    ("4 rows / 4 adapters over base", _ratio("ours_mixed4_over_base"), _ratio("peft_mixed4_over_base")),
    ("16 rows / 16 adapters over 16-row single adapter", _ratio("ours_mixed16_over_one16"), _ratio("peft_mixed16_over_one16")),
    ("16 rows / 16 adapters, adapterhub over peft", _ratio("ours_mixed16_over_peft_mixed16"), _blank),
    ("one adapter, adapterhub over peft", _ratio("ours_one_over_peft_one"), _blank),
    ("switch between resident adapters (ms)", lambda r: f"{r['ours_switch_ms']:.4f}", lambda r: f"{r['peft_set_adapter_ms']:.2f}"),
    ("switch to a 4-adapter mixed route (ms)", lambda r: f"{r['ours_switch_mixed_ms']:.4f}", _blank),
    ("hot swap, weights in memory: remove+plan+apply (ms)", lambda r: f"{r['ours_plan_apply_ms']:.2f}", _blank),
    ("  of which plan (validate + convert) / apply (copy) (ms)",
     lambda r: "{plan:.2f} / {apply:.2f}".format(**r["ours_remove_plan_apply_split_ms"]), _blank),
    ("max abs logit diff vs peft, mixed 4", lambda r: f"{r['max_abs_logit_diff_vs_peft_mixed4']:.1e}", _blank),
]


def print_table(results: dict[str, Any], out: Any = sys.stdout) -> None:
    """Markdown table; ratio cells read "wall / cpu"."""
    names = list(results)
    head = ["figure"]
    for n in names:
        head += [f"adapterhub {n}", f"peft {n}"]
    print("| " + " | ".join(head) + " |", file=out)
    print("|" + " --- |" * len(head), file=out)
    for label, ours, theirs in TABLE_ROWS:
        cells = [label]
        for n in names:
            cells += [ours(results[n]), theirs(results[n])]
        print("| " + " | ".join(cells) + " |", file=out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--layers", type=int, default=30, help="decoder layers (30 = the real shape)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma list of " + ", ".join(CONFIGS))
    ap.add_argument("--no-train", action="store_true", help="skip the training-step comparison")
    ap.add_argument("--focus", action="store_true", help="only the 4-row forwards, for more rounds (with --no-train)")
    ap.add_argument("--out", type=Path, default=RESULTS / "lora_runtime.json")
    ap.add_argument("--json", action="store_true", help="print the result object as the last line")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    base = build_base(num_layers=args.layers)
    results = {name: bench_config(base, name, CONFIGS[name], args.repeats, focus=args.focus) for name in args.configs.split(",")}
    train = None if args.no_train else bench_train_step(base, CONFIGS["qv-r8"], args.repeats)
    doc = {
        "benchmark": "lora_runtime",
        "model": {**SMOL135M, "num_hidden_layers": args.layers, "init": "random", "dtype": "float32"},
        "batch": "4x128 (16x128 for the 16-adapter rows)",
        "repeats": args.repeats,
        "statistic": "median of interleaved rounds; wall time and process CPU time",
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "peft": _version("peft"),
            "transformers": _version("transformers"),
        },
        "seconds": round(time.perf_counter() - t0, 1),
        "results": results,
        "train_step_qv_r8": train,
    }
    out = sys.stderr if args.json else sys.stdout
    print_table(results, out)
    if train is not None:
        print(
            f"training step 4x128, LoRA q/v r8: adapterhub {train['ours_step_s']:.2f} s, peft {train['peft_step_s']:.2f} s "
            f"(wall {train['ours_over_peft']:.3f}x, cpu {train['ours_over_peft_cpu']:.3f}x)",
            file=out,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, args.out)
    if args.json:
        print(json.dumps(doc))
    return 0


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    raise SystemExit(main())
