"""Serving engine benchmark (issues 13, 25): closed-loop clients against ``adapterhub.serving.Engine``.

``--clients`` threads each send ``--requests-per-client`` requests back to back (submit,
consume the stream, time every delta). The request mix is drawn once with ``--seed``:
prompt lengths (``--prompt-tokens``, default 64-256 tokens of real English text, the
ACLSum abstracts of the ``summarize-aclsum`` task pack) and ``max_tokens``
(``--max-tokens``, default 32-128), greedy. Every workload and peer serves that same
mix; only the adapter each request names changes:

* ``base``: every request on the bare base;
* ``1``: every request on one LoRA adapter;
* ``8``: eight adapters, uniformly;
* ``64``: 64 adapters with Zipf(1.0) popularity, all loaded beforehand;
* ``64_cold``: the same Zipf draw over 64 adapters pushed to a local registry (a temporary
  ``ADAPTERHUB_HOME``) and named by reference (``team/a7``, or ``team/a7@1.0.0`` with
  ``--cold-pinned``): the engine pulls and loads each on first use, in the background,
  while it keeps decoding the others.

Peers, same run, same mix, eight-adapter workload:

* ``peft_naive``: ``peft.PeftModel`` on its own copy of the base with the eight adapters
  (exported to PEFT format), one request at a time under a lock: ``set_adapter`` +
  ``generate``; ``--peft-requests`` caps its requests (tokens/s is a rate);
* ``static``: ``AdapterHost.generate`` on batches of ``--clients`` requests in order, each
  batch waiting for its longest row; a row's tokens count only up to its own
  ``max_tokens``.

Issue 25 adds, in the same run (``benchmarks/serve_bound.py``, ``benchmarks/serve_chat.py``):

* ``hf_cb``: transformers' own continuous batching on the bare-base workload, on its own
  copy of the base: ``model.init_continuous_batching`` (``sdpa`` attention over its paged
  cache, FIFO scheduler, ``max_batch_tokens`` transformers' default unless
  ``--hf-cb-batch-tokens``), driven by the same closed loop through
  ``add_request(streaming=True)``, with the prompt token ids the engine's ``PromptEncoder``
  makes of each request and its ``max_tokens``, greedy, so TTFT and ITL are measured as for
  the engine. Keys: ``tokens_per_s_hf_cb_base``, ``ttft_p50_ms_hf_cb``/``p99``,
  ``itl_p50_ms_hf_cb``/``p99``; ratios ``engine_base_over_hf_cb`` (engine base tokens/s
  over hf_cb's) and ``itl_p99_hf_cb_over_engine`` (hf_cb's ITL p99 over the engine base's).
* ``chat``: multi-turn chat, ``--clients`` conversations of ``--chat-turns`` turns (5), one
  adapter each (client i on ``a<i % 8>``): a first user message of 100-200 corpus tokens and
  an instruction, then per turn the engine's answer appended as the assistant message and
  a 30-80-token follow-up; ``max_tokens`` 32-64 per turn, greedy. Run twice, on engines with
  ``prefix_cache=True`` and ``False``. Keys: ``chat_tokens_per_s_cache``/``nocache`` (every
  turn's tokens over the loop's wall time), ``chat_ttft_p50_ms_turn5_cache``/``nocache`` (the
  last turn's TTFT p50: turn 5 by default), ``prefix_cache_hit_rate`` (prompt tokens served
  from the cache over those looked up, cache-on engine's ``stats()["prefix_cache"]``; None
  where the engine has no such stats or looked nothing up), ``chat_turns``; ratios ``chat_cache_over_nocache``
  (tokens/s) and ``chat_ttft5_cache_over_nocache``. The workload record holds a per-turn
  table for each (tokens/s over the turn's span, first submit to last finish; TTFT, ITL,
  mean prompt tokens).
* ``bound``: how close the engine gets to the machine. On the plain base, no scheduler:
  ``prefill_ms_per_token``, one forward of ``--bound-prefill-tokens`` (2048) prompt tokens
  as rows of ``--bound-width`` (256), logits of the last position only, median of 3, over
  its tokens; ``decode_step_ms_c``, one decode step of ``--clients`` rows over a
  ``--bound-kv``-token (200) cache each, median of 10. The mix's best case is its prompt
  tokens × the prefill cost + the tokens the 8-adapter workload produced × the decode step
  / clients; ``bound_tokens_per_s`` is those tokens over that time and ``share_of_bound`` the
  best case over the 8-adapter workload's wall time (its tokens/s over the bound's). The
  bound is the bare base's: LoRA's own cost counts against the engine.

Tokens/s is completion tokens actually produced (a request may stop at EOS before its
``max_tokens``) over the wall time of the loop. TTFT is submit → first delta carrying a
token; inter-token latency is the gap between consecutive token deltas of one request,
as the client thread sees them.

    .venv/bin/python benchmarks/serve_engine.py [--model smollm2|tiny] [--threads 1] [--clients 16]
        [--adapter qv-r8|all-r16] [--requests-per-client 8] [--chat-turns 5] [--hf-cb-batch-tokens N]
        [--workloads base,1,8,64,64_cold,peft_naive,static,hf_cb,chat,bound] [--json]

``--model tiny`` is a smoke run (well under a minute; its chat is 3 short turns: a byte
tokenizer in a 512-token window); result files
(``benchmarks/results/serve_engine-<model>-<adapter>-t<threads>.{json,md}``) are written
for real runs, or wherever ``--out`` says. With ``--json`` the last stdout line is one
JSON object (tokens/s per workload, TTFT/ITL percentiles, ratios).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adapterhub.host import AdapterHost
from adapterhub.serving import Engine, EngineConfig, make_request
from adapterhub.testing.adapters import make_adapter

# The new workloads' modules (issue 25), beside this file; they import this one by name.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
if __name__ == "__main__":
    sys.modules.setdefault("serve_engine", sys.modules[__name__])
import serve_bound  # noqa: E402
import serve_chat  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ADAPTERS: dict[str, dict[str, Any]] = {
    "qv-r8": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]},
    "all-r16": {"r": 16, "alpha": 32, "target_modules": "all-linear"},
}
MODELS = {"smollm2": "smollm2-135m-instruct", "tiny": "tiny-random-llama", "random": "random-smollm2-shape"}
ENGINE_WORKLOADS = ("base", "1", "8", "64", "64_cold")
WORKLOADS = (*ENGINE_WORKLOADS, "8_unpacked", "peft_naive", "static", "hf_cb", "chat", "bound")
N_ADAPTERS = 64
NAMESPACE = "team"
# Zipf exponent of the 64-adapter popularity (issue 13).
ZIPF_S = 1.0
# The chat workload's conversations (issue 25); the tiny model's byte tokenizer and
# 512-token window hold only shorter ones.
CHAT: dict[str, Any] = {"turns": 5, "first": (100, 200), "follow": (30, 80), "max": (32, 64)}
TINY_CHAT: dict[str, Any] = {"turns": 3, "first": (24, 48), "follow": (8, 16), "max": (4, 8)}


# --- the request mix ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One request of the mix (identical across workloads; only the adapter changes)."""

    prompt: str
    prompt_tokens: int
    max_tokens: int
    seed: int


def corpus() -> tuple[str, list[str]]:
    """Long real English text (its source, its documents): the ACLSum abstracts, or the
    project's docs where that data package is not installed."""
    from adapterhub.catalog import get_catalog

    try:
        task = get_catalog().task("summarize-aclsum")
        return "summarize-aclsum prompts", [ex.prompt for split in ("train", "validation", "test") for ex in task.load(split)]
    except Exception:  # noqa: BLE001 - the data package missing or broken: fall back
        pass
    root = Path(__file__).resolve().parent.parent
    return "README.md + docs/*.md", [p.read_text() for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.exists()]


def token_stream(tokenizer: Any, docs: Sequence[str]) -> list[int]:
    """The corpus as one token stream (documents separated by a blank line)."""
    # Tokenized document by document: one call on the whole corpus trips the tokenizer's
    # "longer than the model's maximum" warning, which is about model inputs, not this.
    return [t for ids in tokenizer([doc + "\n\n" for doc in docs], add_special_tokens=False)["input_ids"] for t in ids]


def draw_mix(tokenizer: Any, docs: Sequence[str], n: int, prompt_range: tuple[int, int], max_range: tuple[int, int], seed: int) -> list[Spec]:
    """``n`` requests: windows of the token stream of ``docs``, decoded back to text."""
    stream = token_stream(tokenizer, docs)
    rng = random.Random(seed)
    specs: list[Spec] = []
    for i in range(n):
        length = rng.randint(*prompt_range)
        max_tokens = rng.randint(*max_range)
        # A window of the stream (wrapping round when the corpus is shorter than asked).
        start = rng.randrange(len(stream))
        ids = [stream[(start + k) % len(stream)] for k in range(length)]
        text = tokenizer.decode(ids, skip_special_tokens=True)
        # Decode → encode may merge tokens at the window's edges: record what the engine
        # will actually see.
        real = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        specs.append(Spec(prompt=text, prompt_tokens=real, max_tokens=max_tokens, seed=seed * 100_003 + i))
    return specs


def assign(workload: str, n: int, seed: int, *, pinned: bool = False) -> list[str | None]:
    """Which adapter (pool name ``a<k>``, registry ref, or None) each request names.

    The 64-adapter warm and cold workloads use the same Zipf draw, so they differ only in
    whether the adapters start loaded. ``pinned`` names cold adapters by exact version
    (``team/a7@1.0.0``) instead of by name (``team/a7``, re-resolved every
    ``resolve_ttl_s``).
    """
    rng = random.Random(f"{seed}-{workload.removesuffix('_cold')}")
    if workload == "base":
        return [None] * n
    if workload == "1":
        return ["a0"] * n
    if workload in ("8", "peft_naive", "static"):
        rng = random.Random(f"{seed}-8")
        return [f"a{rng.randrange(8)}" for _ in range(n)]
    weights = [1.0 / (k + 1) ** ZIPF_S for k in range(N_ADAPTERS)]
    picks = rng.choices(range(N_ADAPTERS), weights=weights, k=n)
    if workload == "64":
        return [f"a{k}" for k in picks]
    if workload == "64_cold":
        return [f"{NAMESPACE}/a{k}{'@1.0.0' if pinned else ''}" for k in picks]
    raise ValueError(f"unknown workload {workload!r}")


# --- measurements ---------------------------------------------------------------------------------


@dataclass
class Record:
    """What a client saw of one request."""

    submitted: float
    token_times: list[float] = field(default_factory=list)  # arrival of each delta carrying tokens
    tokens: int = 0
    finish: str = ""
    done: float = 0.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000.0, 3)


def summarize(records: Sequence[Record], wall_s: float, *, streamed: bool) -> dict[str, Any]:
    tokens = sum(r.tokens for r in records)
    latency = [r.done - r.submitted for r in records]
    out: dict[str, Any] = {
        "requests": len(records),
        "completion_tokens": tokens,
        "wall_s": round(wall_s, 3),
        "tokens_per_s": tokens / wall_s if wall_s > 0 else None,
        "latency_p50_ms": _ms(percentile(latency, 50)),
        "latency_p99_ms": _ms(percentile(latency, 99)),
        "finish": {k: sum(1 for r in records if r.finish == k) for k in sorted({r.finish for r in records})},
    }
    if streamed:
        ttft = [r.token_times[0] - r.submitted for r in records if r.token_times]
        itl = [b - a for r in records for a, b in zip(r.token_times, r.token_times[1:], strict=False)]
        out.update({
            "ttft_p50_ms": _ms(percentile(ttft, 50)), "ttft_p99_ms": _ms(percentile(ttft, 99)),
            "itl_p50_ms": _ms(percentile(itl, 50)), "itl_p99_ms": _ms(percentile(itl, 99)),
        })
    return out


def closed_loop(clients: int, jobs: Sequence[Sequence[int]], serve: Callable[[int], Record]) -> tuple[list[Record], float]:
    """Client ``c`` serves ``jobs[c]`` back to back; returns every record and the wall time
    from the common start to the last client's end."""
    barrier = threading.Barrier(clients + 1)
    records: list[list[Record]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []

    def client(c: int) -> None:
        barrier.wait()
        try:
            for i in jobs[c]:
                records[c].append(serve(i))
        except BaseException as exc:  # noqa: BLE001 - re-raised by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(c,), name=f"client-{c}", daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return [r for rs in records for r in rs], wall


def engine_serve(engine: Engine, specs: Sequence[Spec], adapters: Sequence[str | None]) -> Callable[[int], Record]:
    def serve(i: int) -> Record:
        s = specs[i]
        req = make_request(s.prompt, adapters[i], raw=True, max_tokens=s.max_tokens, temperature=0.0, seed=s.seed)
        rec = Record(submitted=time.perf_counter())
        handle = engine.submit(req)
        for delta in handle:
            if delta.token_ids:  # the final delta of an EOS stop carries no token
                rec.token_times.append(time.perf_counter())
                rec.tokens += len(delta.token_ids)
        rec.done = time.perf_counter()
        completion = handle.result()
        if completion.completion_tokens != rec.tokens:
            raise AssertionError(f"{completion.request_id}: stream gave {rec.tokens} tokens, completion {completion.completion_tokens}")
        rec.finish = completion.finish_reason
        return rec

    return serve


def run_engine(host: AdapterHost, config: EngineConfig, clients: int, specs: Sequence[Spec], adapters: Sequence[str | None], per_client: int) -> dict[str, Any]:
    """One workload on a fresh engine (so its counters are its own)."""
    jobs = [range(c * per_client, (c + 1) * per_client) for c in range(clients)]
    with Engine(host, config) as engine:
        records, wall = closed_loop(clients, jobs, engine_serve(engine, specs, adapters))
        stats = engine.stats()
    out = summarize(records, wall, streamed=True)
    out["distinct_adapters"] = len({a for a in adapters[: clients * per_client]})
    out["engine"] = {k: stats[k] for k in ("adapter_loads", "adapter_load_failures", "adapter_evictions", "steps", "prompt_tokens", "completion_tokens")}
    return out


# --- peers -------------------------------------------------------------------------------------------


def build_peft(model: torch.nn.Module, dirs: Sequence[Path], tmp: Path) -> Any:
    """A ``PeftModel`` holding adapters ``a0..a<n-1>``, loaded from PEFT-format exports."""
    from adapterhub.registry.peft_interchange import export_peft
    from peft import PeftModel

    pdirs = [export_peft(d, tmp / f"peft-a{k}") for k, d in enumerate(dirs)]
    pm = PeftModel.from_pretrained(model, str(pdirs[0]), adapter_name="a0")
    for k, d in enumerate(pdirs[1:], start=1):
        pm.load_adapter(str(d), adapter_name=f"a{k}")
    pm.eval()
    return pm


def run_peft(pm: Any, host: AdapterHost, clients: int, specs: Sequence[Spec], adapters: Sequence[str | None], n: int) -> dict[str, Any]:
    """Naive server: clients share one lock; each request is set_adapter + generate."""
    from transformers import GenerationConfig

    eos = host.eos_ids()
    pad = host.tokenizer.pad_token_id if host.tokenizer.pad_token_id is not None else eos[0]
    lock = threading.Lock()
    eos_set = set(eos)

    def serve(i: int) -> Record:
        s = specs[i]
        ids = torch.tensor([host.tokenizer(s.prompt, add_special_tokens=False)["input_ids"]], device=host.device)
        gen = GenerationConfig(max_new_tokens=s.max_tokens, do_sample=False, eos_token_id=eos, pad_token_id=pad)
        rec = Record(submitted=time.perf_counter())
        with lock, torch.no_grad():
            pm.set_adapter(adapters[i])
            out = pm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gen)
        rec.done = time.perf_counter()
        new = out[0, ids.shape[1] :].tolist()
        cut = next((j for j, t in enumerate(new) if t in eos_set), len(new))
        rec.tokens = min(cut, s.max_tokens)
        rec.finish = "stop" if cut < len(new) else "length"
        return rec

    # Requests are dealt round-robin so every client has work when n < clients * per_client.
    jobs = [range(c, n, clients) for c in range(clients)]
    records, wall = closed_loop(clients, jobs, serve)
    return summarize(records, wall, streamed=False)


def run_static(host: AdapterHost, batch: int, specs: Sequence[Spec], adapters: Sequence[str | None], n: int) -> dict[str, Any]:
    """Static batches of ``batch`` requests in order through ``AdapterHost.generate``."""
    records: list[Record] = []
    t0 = time.perf_counter()
    for lo in range(0, n, batch):
        idx = list(range(lo, min(lo + batch, n)))
        submitted = time.perf_counter()
        gens = host.generate([specs[i].prompt for i in idx], adapters=[adapters[i] for i in idx],
                             max_new_tokens=max(specs[i].max_tokens for i in idx), raw=True)
        done = time.perf_counter()
        for i, g in zip(idx, gens, strict=True):
            produced = len(g.token_ids)
            records.append(Record(submitted=submitted, tokens=min(produced, specs[i].max_tokens), done=done,
                                  finish="length" if produced >= specs[i].max_tokens else "stop"))
    return summarize(records, time.perf_counter() - t0, streamed=False)


# --- setup ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def temp_home(path: Path) -> Iterator[None]:
    """``ADAPTERHUB_HOME`` at ``path`` (a throw-away local registry); the converted base
    models stay where they are, so nothing is converted again."""
    from adapterhub import paths

    saved = {k: os.environ.get(k) for k in ("ADAPTERHUB_HOME", "ADAPTERHUB_MODEL_CACHE")}
    os.environ["ADAPTERHUB_MODEL_CACHE"] = str(paths.model_cache_dir())
    os.environ["ADAPTERHUB_HOME"] = str(path)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition(",")
    a, b = int(lo), int(hi or lo)
    if not 1 <= a <= b:
        raise argparse.ArgumentTypeError(f"expected LO,HI with 1 <= LO <= HI, got {text!r}")
    return a, b


def _workloads(text: str) -> tuple[str, ...]:
    names = tuple(w.strip() for w in text.split(",") if w.strip())
    bad = [w for w in names if w not in WORKLOADS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown workload(s) {bad}; choose from {','.join(WORKLOADS)}")
    return names


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 4)


def _warm_up(host: AdapterHost, config: EngineConfig, clients: int, specs: Sequence[Spec], names: Sequence[str | None]) -> None:
    """First forwards (allocator, kernels, routes) outside every timed loop."""
    reqs = [make_request(specs[i].prompt, names[i % len(names)], raw=True, max_tokens=4, temperature=0.0) for i in range(min(clients, len(specs)))]
    with Engine(host, config) as engine:
        engine.generate(reqs)


def _load(model: str) -> Any:
    """The base: a packaged model, or SmolLM2's shape with random weights and a byte
    tokenizer (``random``: for a GPU machine that cannot carry the packaged weights)."""
    if model == "random":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from lora_runtime import build_base

        from adapterhub.protocols.basemodel import LoadedBase
        from adapterhub.testing.models import byte_tokenizer

        return LoadedBase(name=MODELS[model], model=build_base(), tokenizer=byte_tokenizer())
    from adapterhub.basemodels import load_base

    return load_base(MODELS[model])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="smollm2")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda for a lent GPU (bf16 there)")
    ap.add_argument("--clients", type=int, default=16, help="closed-loop client threads (and the engine's max_running)")
    ap.add_argument("--adapter", choices=sorted(ADAPTERS), default="qv-r8", help="LoRA r8 α16 on q/v, or r16 α32 on every linear")
    ap.add_argument("--requests-per-client", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=_range, default=(64, 256), metavar="LO,HI")
    ap.add_argument("--max-tokens", type=_range, default=(32, 128), metavar="LO,HI")
    ap.add_argument("--max-prefill-tokens", type=int, default=None, help="engine's per-step prefill budget (default: the engine's)")
    ap.add_argument("--peft-requests", type=int, default=32, help="requests the naive peft server runs (a rate is measured)")
    ap.add_argument("--static-requests", type=int, default=None, help="requests the static-batch peer runs (default: all)")
    ap.add_argument("--workloads", type=_workloads, default=WORKLOADS, metavar=",".join(WORKLOADS))
    ap.add_argument("--hf-cb-batch-tokens", type=int, default=None,
                    help="hf_cb: transformers' max_batch_tokens, tokens per forward (default: transformers' own, 8192)")
    ap.add_argument("--chat-turns", type=int, default=None, help=f"chat: turns per conversation (default {CHAT['turns']}; tiny {TINY_CHAT['turns']})")
    ap.add_argument("--chat-first-tokens", type=_range, default=None, metavar="LO,HI",
                    help=f"chat: corpus tokens of the first message (default {CHAT['first']}; tiny {TINY_CHAT['first']})")
    ap.add_argument("--chat-followup-tokens", type=_range, default=None, metavar="LO,HI",
                    help=f"chat: corpus tokens of a follow-up (default {CHAT['follow']}; tiny {TINY_CHAT['follow']})")
    ap.add_argument("--chat-max-tokens", type=_range, default=None, metavar="LO,HI",
                    help=f"chat: max_tokens of each answer (default {CHAT['max']}; tiny {TINY_CHAT['max']})")
    ap.add_argument("--bound-prefill-tokens", type=int, default=2048, help="bound: prompt tokens of the one large prefill forward")
    ap.add_argument("--bound-width", type=int, default=256, help="bound: tokens per row of that forward (rows = prefill tokens / width)")
    ap.add_argument("--bound-kv", type=int, default=200, help="bound: cached tokens of each row in the decode step")
    ap.add_argument("--cold-pinned", action="store_true", help="64_cold names team/a7@1.0.0 instead of team/a7 (no tag re-resolution)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="result JSON (default: benchmarks/results/serve_engine-<model>-<adapter>-t<threads>.json; not written for --model tiny)")
    ap.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    args = ap.parse_args(argv)
    chat_defaults = TINY_CHAT if args.model == "tiny" else CHAT
    for flag, key in (("chat_turns", "turns"), ("chat_first_tokens", "first"), ("chat_followup_tokens", "follow"), ("chat_max_tokens", "max")):
        if getattr(args, flag) is None:
            setattr(args, flag, chat_defaults[key])
    if args.clients < 1 or args.requests_per_client < 1 or args.threads < 1 or args.chat_turns < 1:
        ap.error("--clients, --requests-per-client, --threads and --chat-turns must be >= 1")

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    base = _load(args.model)
    run = set(args.workloads)
    n = args.clients * args.requests_per_client
    text_source, docs = corpus()
    specs = draw_mix(base.tokenizer, docs, n, args.prompt_tokens, args.max_tokens, args.seed)
    n_peft = min(args.peft_requests, n)
    n_static = min(args.static_requests or n, n)
    need = max([N_ADAPTERS if run & {"64", "64_cold"} else 0, 8 if run & {"8", "8_unpacked", "peft_naive", "static", "chat"} else 0, 1 if "1" in run else 0])
    extra: dict[str, Any] = {}
    if args.max_prefill_tokens is not None:
        extra["max_prefill_tokens"] = args.max_prefill_tokens
    config = EngineConfig(max_running=args.clients, max_queue=max(256, args.clients), **extra)
    results: dict[str, dict[str, Any]] = {}
    convs: list[Any] = []
    if "chat" in run:
        # Drawn (and checked against the context window) before anything is timed.
        convs = serve_chat.draw_chats(base.tokenizer, docs, args.clients, args.chat_turns, args.chat_first_tokens,
                                      args.chat_followup_tokens, args.chat_max_tokens, args.seed)
        window = min(config.max_model_len or 1 << 30, int(getattr(base.model.config, "max_position_embeddings", 2048)))
        longest = serve_chat.longest(base.tokenizer, convs)
        if longest > window:
            ap.error(f"chat: a conversation may reach {longest} tokens, more than the {window}-token window; "
                     "lower --chat-turns or --chat-*-tokens")

    with tempfile.TemporaryDirectory(prefix="serve-engine-") as d:
        tmp = Path(d)
        dirs = [tmp / f"a{k}" for k in range(need)]
        for k, adir in enumerate(dirs):
            make_adapter("lora", base.model, adir, base_name=base.name, config=ADAPTERS[args.adapter], name=f"a{k}",
                         version="1.0.0", seed=1000 + k, scale=0.02)
        # peft's copy of the base is taken before the host installs its serving layers
        # (their router holds a lock and can't be deep-copied).
        pm = build_peft(copy.deepcopy(base.model), dirs[:8], tmp) if "peft_naive" in run else None
        if pm is not None:
            pm.to(args.device)
        # transformers' continuous batching and the bound run on a plain copy too.
        plain = copy.deepcopy(base.model) if run & {"hf_cb", "bound"} else None
        if plain is not None and args.device != "cpu":
            plain.to(device=args.device, dtype=torch.bfloat16)
        if args.device != "cpu":
            # The host serves a LoadedBase as given: put it on the device (bf16) first.
            base.model.to(device=args.device, dtype=torch.bfloat16)
        host = AdapterHost(base, device=args.device)
        host.fingerprint  # noqa: B018 - hash the base once, before any timing
        warm = [k for k in range(need) if not (k >= 8 and "64" not in run)]
        for k in warm:
            host.load(dirs[k], name=f"a{k}")
        _warm_up(host, config, args.clients, specs, [None, *[f"a{k}" for k in warm[:8]]])

        for w in ("base", "1", "8", "64"):
            if w in run:
                results[w] = run_engine(host, config, args.clients, specs, assign(w, n, args.seed), args.requests_per_client)
                print(f"[serve_engine] {w}: {results[w]['tokens_per_s']:.1f} tok/s", file=sys.stderr)
        if "8_unpacked" in run:
            # The engine as it was before issue 25, in the same run: a per-row forward per
            # decode group and per prefill (no method packs), no prefix cache.
            host.packable = lambda entry: False  # type: ignore[method-assign]
            try:
                results["8_unpacked"] = run_engine(host, config.model_copy(update={"prefix_cache": False}), args.clients,
                                                   specs, assign("8", n, args.seed), args.requests_per_client)
            finally:
                del host.packable
            print(f"[serve_engine] 8_unpacked: {results['8_unpacked']['tokens_per_s']:.1f} tok/s", file=sys.stderr)
        if "static" in run:
            results["static"] = run_static(host, args.clients, specs, assign("static", n, args.seed), n_static)
            print(f"[serve_engine] static: {results['static']['tokens_per_s']:.1f} tok/s", file=sys.stderr)
        if pm is not None:
            results["peft_naive"] = run_peft(pm, host, args.clients, specs, assign("peft_naive", n, args.seed), n_peft)
            print(f"[serve_engine] peft_naive: {results['peft_naive']['tokens_per_s']:.1f} tok/s", file=sys.stderr)
            del pm
        if "hf_cb" in run and plain is not None:
            results["hf_cb"] = serve_bound.run_hf_cb(plain, serve_bound.prompt_ids(host, specs), specs, host.eos_ids(),
                                                     args.clients, args.requests_per_client, args.hf_cb_batch_tokens)
            print(f"[serve_engine] hf_cb: {results['hf_cb']['tokens_per_s']:.1f} tok/s", file=sys.stderr)
        if "bound" in run and plain is not None:
            results["bound"] = serve_bound.measure_bound(plain, args.clients, args.bound_prefill_tokens, args.bound_width,
                                                         args.bound_kv, args.device)
            results["bound"] |= serve_bound.share_of_bound(results["bound"], sum(s.prompt_tokens for s in specs),
                                                           results.get("8"), args.clients)
            print(f"[serve_engine] bound: prefill {results['bound']['prefill_ms_per_token']:.2f} ms/token, "
                  f"decode step {results['bound']['decode_step_ms_c']:.1f} ms at {args.clients} rows", file=sys.stderr)
        del plain
        if "chat" in run:
            results["chat"] = serve_chat.run_both(host, config, convs)
        if "64_cold" in run:
            # Same pool size as the warm 64 run: the pre-loaded copies leave first.
            for k in warm:
                host.unload(f"a{k}")
            with temp_home(tmp / "home"):
                from adapterhub.registry.client import Registry

                reg = Registry(None, progress=False)
                for k in range(N_ADAPTERS):
                    reg.push(dirs[k], f"{NAMESPACE}/a{k}", version="1.0.0")
                results["64_cold"] = run_engine(host, config, args.clients, specs, assign("64_cold", n, args.seed, pinned=args.cold_pinned), args.requests_per_client)
            print(f"[serve_engine] 64_cold: {results['64_cold']['tokens_per_s']:.1f} tok/s", file=sys.stderr)

    doc = _document(args, results, specs, config, time.perf_counter() - t_start, load_before)
    doc["mix"]["text"] = text_source
    where = f"t{args.threads}" if args.device == "cpu" else args.device.replace(":", "")
    out = args.out or (RESULTS / f"serve_engine-{args.model}-{args.adapter}-{where}.json" if args.model != "tiny" else None)
    md = _markdown(doc)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2) + "\n")
        out.with_suffix(".md").write_text(md)
    print(md, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(doc["headline"]))
    return 0


def _document(args: argparse.Namespace, results: dict[str, dict[str, Any]], specs: Sequence[Spec], config: EngineConfig,
              seconds: float, load_before: tuple[float, float, float]) -> dict[str, Any]:
    def rate(w: str) -> float | None:
        r = results.get(w)
        return None if r is None or r["tokens_per_s"] is None else round(r["tokens_per_s"], 3)

    eight = results.get("8", {})
    cold = results.get("64_cold")
    base, hf = results.get("base", {}), results.get("hf_cb", {})
    chat = serve_chat.headline(results.get("chat"))
    headline: dict[str, Any] = {
        "tokens_per_s_base": rate("base"), "tokens_per_s_1": rate("1"), "tokens_per_s_8": rate("8"),
        "tokens_per_s_64": rate("64"), "tokens_per_s_64_cold": rate("64_cold"),
        "adapter_loads_64_cold": None if cold is None else cold["engine"]["adapter_loads"],
        "peft_naive_tokens_per_s": rate("peft_naive"), "static_tokens_per_s": rate("static"),
        "tokens_per_s_8_unpacked": rate("8_unpacked"),
        "ttft_p50_ms": eight.get("ttft_p50_ms"), "ttft_p99_ms": eight.get("ttft_p99_ms"),
        "itl_p50_ms": eight.get("itl_p50_ms"), "itl_p99_ms": eight.get("itl_p99_ms"),
        "clients": args.clients, "threads": args.threads, "adapter": args.adapter, "model": args.model, "device": args.device,
        "requests_per_client": args.requests_per_client,
        "tokens_per_s_hf_cb_base": rate("hf_cb"),
        "ttft_p50_ms_hf_cb": hf.get("ttft_p50_ms"), "ttft_p99_ms_hf_cb": hf.get("ttft_p99_ms"),
        "itl_p50_ms_hf_cb": hf.get("itl_p50_ms"), "itl_p99_ms_hf_cb": hf.get("itl_p99_ms"),
        **chat,
        **serve_bound.headline(results.get("bound")),
        "ratios": {
            "one_over_base": _ratio(rate("1"), rate("base")),
            "a64_over_1": _ratio(rate("64"), rate("1")),
            "a64cold_over_64": _ratio(rate("64_cold"), rate("64")),
            "over_peft_naive": _ratio(rate("8"), rate("peft_naive")),
            "over_static": _ratio(rate("8"), rate("static")),
            "over_unpacked": _ratio(rate("8"), rate("8_unpacked")),
            "itl_p99_over_p50": _ratio(eight.get("itl_p99_ms"), eight.get("itl_p50_ms")),
            "engine_base_over_hf_cb": _ratio(rate("base"), rate("hf_cb")),
            "itl_p99_hf_cb_over_engine": _ratio(hf.get("itl_p99_ms"), base.get("itl_p99_ms")),
            "chat_cache_over_nocache": _ratio(chat["chat_tokens_per_s_cache"], chat["chat_tokens_per_s_nocache"]),
            "chat_ttft5_cache_over_nocache": _ratio(chat["chat_ttft_p50_ms_turn5_cache"], chat["chat_ttft_p50_ms_turn5_nocache"]),
        },
        "workloads": {w: {k: v for k, v in r.items() if k != "engine"} | ({"adapter_loads": r["engine"]["adapter_loads"]} if "engine" in r else {})
                      for w, r in results.items()},
    }
    return {
        "benchmark": "serve_engine",
        "model": args.model,
        "adapter": args.adapter,
        "adapter_config": ADAPTERS[args.adapter],
        "machine": {
            "cpu_count": os.cpu_count(), "torch_threads": args.threads, "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(), "platform": platform.platform(), "torch": torch.__version__,
            "device": args.device, "dtype": "float32" if args.device == "cpu" else "bfloat16",
        },
        "mix": {
            "requests": len(specs), "seed": args.seed, "prompt_tokens_range": list(args.prompt_tokens),
            "max_tokens_range": list(args.max_tokens), "prompt_tokens_total": sum(s.prompt_tokens for s in specs),
            "max_tokens_total": sum(s.max_tokens for s in specs), "zipf_s": ZIPF_S, "cold_refs": "name@version" if args.cold_pinned else "name",
            "peft_requests": min(args.peft_requests, len(specs)), "static_requests": min(args.static_requests or len(specs), len(specs)),
            "chat": {"turns": args.chat_turns, "first_tokens_range": list(args.chat_first_tokens),
                     "followup_tokens_range": list(args.chat_followup_tokens), "max_tokens_range": list(args.chat_max_tokens)},
        },
        "engine_config": config.model_dump(),
        "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(seconds, 1),
        "headline": headline,
        "workloads": results,
    }


def fmt(x: Any, spec: str = ".1f") -> str:
    """A number for the markdown tables; a dash for None."""
    return "—" if x is None else format(x, spec)


def _markdown(doc: dict[str, Any]) -> str:
    h = doc["headline"]
    m = doc["machine"]
    f = fmt

    labels = {"base": "bare base", "1": "1 adapter", "8": "8 adapters, uniform", "64": "64 adapters, Zipf, loaded",
              "64_cold": "64 adapters, Zipf, cold (registry)", "static": "static batches (8 adapters)",
              "8_unpacked": "8 adapters, per-row forwards, no prefix cache (the engine before issue 25)",
              "peft_naive": "peft, one at a time (8 adapters)", "hf_cb": "transformers continuous batching (bare base)"}
    rows = []
    for w in WORKLOADS:
        r = doc["workloads"].get(w)
        if r is None or w not in labels:
            continue
        loads = r.get("engine", {}).get("adapter_loads")
        rows.append(f"| {labels[w]} | {f(r['tokens_per_s'])} | {r['requests']} | {r['completion_tokens']} | "
                    f"{f(r.get('ttft_p50_ms'))} / {f(r.get('ttft_p99_ms'))} | {f(r.get('itl_p50_ms'))} / {f(r.get('itl_p99_ms'))} | "
                    f"{f(r['latency_p50_ms'])} / {f(r['latency_p99_ms'])} | {'' if loads is None else loads} |")
    ratios = ", ".join(f"{k} {f(v, '.3f')}" for k, v in h["ratios"].items())
    mix = doc["mix"]
    w = doc["workloads"]
    extra = [*serve_bound.markdown_hf_cb(w.get("hf_cb")), *serve_chat.markdown(w.get("chat")), *serve_bound.markdown_bound(w.get("bound"))]
    return "\n".join([
        f"Serving engine benchmark ({doc['model']}, LoRA {doc['adapter']}, CPU fp32, {m['torch_threads']} thread(s), "
        f"{h['clients']} closed-loop clients × {h['requests_per_client']} requests; prompts {mix['prompt_tokens_range'][0]}-"
        f"{mix['prompt_tokens_range'][1]} tokens, max_tokens {mix['max_tokens_range'][0]}-{mix['max_tokens_range'][1]}, greedy; "
        f"load avg {m['loadavg_before'][0]:.1f} → {m['loadavg_after'][0]:.1f})",
        "",
        "| workload | tokens/s | requests | tokens | TTFT p50 / p99 ms | ITL p50 / p99 ms | latency p50 / p99 ms | adapter loads |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Ratios: {ratios}",
        "",
        *extra,
    ])


if __name__ == "__main__":
    raise SystemExit(main())
