"""Mixed-adapter LoRA layer timing: per-row gather (the old path) against grouping by adapter.

One ``MultiLoraLinear`` of SmolLM2-135M's shapes (576 -> 576 attention, 576 -> 1536
MLP), fp32 on CPU, **one thread**, no grad, for LoRA r=8 and r=16, with 16 requests on
1, 4 or 16 distinct adapters (request ``i`` on adapter ``i % n``: the interleaved worst
case for grouping). Two layouts:

* ``decode``: the per-row batch of a decode step, ``x (16, 1, 576)``;
* ``packed``: one packed forward ``x (1, 80, 576)``: the 16 requests' decode tokens,
  then a 64-token prompt chunk on adapter 0 (the serving engine's one forward per step).

Variants (every one is checked against the others before it is timed):

* ``base``: the bare ``F.linear`` (the floor);
* ``gather``: the old mixed path: A and B gathered per row (per token when packed) with
  ``index_select``, then two ``bmm`` (BGMV-style);
* ``per-slot``: one shrink/expand per distinct adapter over its rows or tokens
  (``narrow``/``addmm_`` when contiguous, ``index_select``/``index_add_`` otherwise);
* ``slices`` (packed only): the same per adapter, but its tokens as a list of slices
  (``cat`` in, one GEMM pair, one ``add_`` per slice back) instead of an index tensor;
* ``current``: what ``LoraRuntime.build_route`` / ``build_token_route`` build now and
  ``MultiLoraLinear`` runs (per-row decode: one gather; packed: a segment per run of
  >= ``SEGMENT_MIN`` tokens on one adapter, one gather for the rest; the single-adapter
  fast path when every row or token is on one adapter).

Each figure is the median over ``--rounds`` rounds of the mean of ``--inner`` calls, the
variants in rotating order inside a round so load drift on the shared machine hits all
alike. Read the ratios more than the absolute times.

    .venv/bin/python benchmarks/lora_grouped.py [--rounds 9] [--inner 10]
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: waiting threads sleep instead of spinning (shared machine).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from adapterhub.plugins.lora import LoraConfig, LoraRuntime  # noqa: E402
from adapterhub.plugins.lora.layers import MultiLoraLinear, Route, SlotGroup, select  # noqa: E402
from torch import nn  # noqa: E402

from adapterhub.protocols.method import TokenSpan  # noqa: E402

ROWS = 16
CHUNK = 64
IN = 576


def build(n: int, out_f: int, r: int) -> tuple[LoraRuntime, MultiLoraLinear]:
    """A runtime with ``n`` resident r-``r`` adapters on one 576 -> ``out_f`` linear."""
    gen = torch.Generator().manual_seed(n * 1000 + out_f + r)
    model = nn.ModuleDict({"proj": nn.Linear(IN, out_f, bias=False)})
    rt = LoraRuntime(model)
    for i in range(n):
        cfg = LoraConfig(r=r, alpha=2 * r + i, target_modules=("proj",))  # distinct scales
        tensors = {"proj.lora_A": torch.randn(r, IN, generator=gen) * 0.05,
                   "proj.lora_B": torch.randn(out_f, r, generator=gen) * 0.05}
        rt.apply(rt.plan(f"a{i}", cfg, tensors))
    layer = model["proj"]
    assert isinstance(layer, MultiLoraLinear)
    return rt, layer


def owners(n: int, packed: bool) -> list[str]:
    """The adapter of every row (decode) or token (packed)."""
    decode = [f"a{i % n}" for i in range(ROWS)]
    return decode + ["a0"] * CHUNK if packed else decode


def old_gather(layer: MultiLoraLinear, rt: LoraRuntime, who: list[str]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The pre-grouping mixed path: A and B gathered per row (token), two bmm."""
    slots = [rt.slot_of(a) for a in who]
    res = {a: rt._resident_of(a) for a in set(who)}
    r = max(u.rank for u in res.values())
    index = torch.tensor(slots)
    scales = torch.tensor([res[a].scale for a in who]).view(-1, 1, 1)

    def run(x: torch.Tensor) -> torch.Tensor:
        a = layer.lora_A[:, :r].index_select(0, index)  # (n, r, in)
        b = layer.lora_B[:, :, :r].index_select(0, index)  # (n, out, r)
        x3 = x.reshape(len(who), -1, layer.in_features)
        out = F.linear(x, layer.weight, layer.bias)
        h = torch.bmm(x3, a.transpose(1, 2)).mul_(scales)
        out.view(len(who), -1, layer.out_features).baddbmm_(h, b.transpose(1, 2))
        return out

    return run


def per_slot_route(rt: LoraRuntime, who: list[str], packed: bool) -> Route:
    """One group per adapter, no gather (whatever its number of rows or tokens)."""
    by: dict[str, list[int]] = {}
    for i, a in enumerate(who):
        by.setdefault(a, []).append(i)
    groups = []
    for a, idx in by.items():
        u = rt._resident_of(a)
        groups.append(SlotGroup(u.slot, u.scale, u.rank, select(idx, torch.device("cpu")), len(idx)))
    return Route(mask=sum(1 << g.slot for g in groups), rank=max(g.rank for g in groups), groups=tuple(groups),
                 packed=packed, rows=0 if packed else len(who))


def runs(idx: list[int]) -> list[slice]:
    out: list[slice] = []
    for i in idx:
        if out and out[-1].stop == i:
            out[-1] = slice(out[-1].start, i + 1)
        else:
            out.append(slice(i, i + 1))
    return out


def slice_lists(layer: MultiLoraLinear, rt: LoraRuntime, who: list[str]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per adapter as in ``per-slot``, its tokens as a list of slices instead of an index."""
    by: dict[str, list[int]] = {}
    for i, a in enumerate(who):
        by.setdefault(a, []).append(i)
    plan = [(rt._resident_of(a), runs(idx)) for a, idx in by.items()]
    fin, fout = layer.in_features, layer.out_features

    def run(x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, layer.weight, layer.bias)
        x2, o2 = x.view(-1, fin), out.view(-1, fout)
        for u, sl in plan:
            a, b = layer.lora_A[u.slot, : u.rank], layer.lora_B[u.slot, :, : u.rank]
            if len(sl) == 1:
                o2[sl[0]].addmm_(torch.mm(x2[sl[0]], a.t()).mul_(u.scale), b.t())
                continue
            y = torch.mm(torch.mm(torch.cat([x2[s] for s in sl]), a.t()).mul_(u.scale), b.t())
            at = 0
            for s in sl:
                n = s.stop - s.start
                o2[s].add_(y[at : at + n])
                at += n
        return out

    return run


class _Called(nn.Module):
    """Runs a function through ``nn.Module.__call__``, so every variant pays the hook
    dispatch a layer in a model pays."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def routed(layer: MultiLoraLinear, route: Route | None) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        layer.router.route = route
        try:
            return layer(x)
        finally:
            layer.router.route = None

    return run


def timed(variants: dict[str, Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor, rounds: int, inner: int) -> dict[str, float]:
    names = list(variants)
    samples: dict[str, list[float]] = {k: [] for k in names}
    for k in names:  # warm-up
        for _ in range(3):
            variants[k](x)
    for rnd in range(rounds):
        for k in names[rnd % len(names):] + names[: rnd % len(names)]:
            fn = variants[k]
            t0 = time.perf_counter_ns()
            for _ in range(inner):
                fn(x)
            samples[k].append((time.perf_counter_ns() - t0) / inner / 1000)
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--inner", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cols = ["base", "gather", "per-slot", "slices", "current"]
    print(f"torch {torch.__version__}, 1 thread, fp32 CPU; median us per layer call "
          f"(rounds={args.rounds}, inner={args.inner})")
    print(f"{'shape':>9} {'r':>3} {'layout':>7} {'n':>3} " + " ".join(f"{c:>9}" for c in cols) + "  current/gather")
    with torch.no_grad():
        for out_f in (576, 1536):
            for r in (8, 16):
                for packed in (False, True):
                    for n in (1, 4, 16):
                        rt, layer = build(n, out_f, r)
                        who = owners(n, packed)
                        gen = torch.Generator().manual_seed(7)
                        x = torch.randn((1, len(who), IN) if packed else (ROWS, 1, IN), generator=gen)
                        if packed:
                            spans = [TokenSpan(a, i, i + 1) for i, a in enumerate(who[:ROWS])]
                            spans.append(TokenSpan("a0", ROWS, ROWS + CHUNK))
                            current = rt.build_token_route(spans, total=len(who))
                        else:
                            current = rt.build_route(who)
                        variants: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
                            "base": layer.base_linear,
                            "gather": _Called(old_gather(layer, rt, who)),
                            "per-slot": routed(layer, per_slot_route(rt, who, packed)),
                            "current": routed(layer, current),
                        }
                        if packed:
                            variants["slices"] = _Called(slice_lists(layer, rt, who))
                        want = variants["gather"](x)
                        for k, fn in variants.items():
                            if k != "base":
                                err = (fn(x) - want).abs().max().item()
                                assert err <= 1e-5, (k, err)
                        t = timed(variants, x, args.rounds, args.inner)
                        cells = " ".join(f"{t[c]:9.1f}" if c in t else f"{'-':>9}" for c in cols)
                        print(f"{IN}->{out_f:<4} {r:>3} {'packed' if packed else 'decode':>7} {n:>3} {cells}"
                              f"  {t['current'] / t['gather']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
