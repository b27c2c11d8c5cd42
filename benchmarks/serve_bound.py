"""The bare base without our engine (issue 25): transformers' own continuous batching as a
peer, and what one forward costs on this machine (the bound the engine is measured against).

Both run on a plain copy of the base taken before ``AdapterHost`` installs its serving
layers, so neither touches the engine's host. Used by ``benchmarks/serve_engine.py``
(workloads ``hf_cb`` and ``bound``); see its module docs for what each key means.

* :func:`run_hf_cb`: transformers' continuous batching (``model.init_continuous_batching``,
  ``ContinuousBatchingManager.add_request(..., streaming=True)``) driven by the same
  closed loop as the engine, with the prompt token ids the engine's ``PromptEncoder``
  makes of each request and its ``max_tokens`` as ``max_new_tokens``, greedy. Every
  streamed output carries all the tokens generated so far; one dispatcher thread reads
  the manager's output queue and hands each output to its request's client.
* :func:`measure_bound`: the cost of one prefill token in one large forward
  (``rows`` × ``width`` prompt tokens, logits for the last position only, median of 3) and
  of one decode step of ``clients`` rows over a ``kv``-token cache (a ``DynamicCache``
  filled with random keys and values: a step's cost does not depend on them; median of 10).
"""

from __future__ import annotations

import math
import queue
import statistics
import threading
import time
from collections.abc import Sequence
from typing import Any

import serve_engine as se
import torch

from adapterhub.host import AdapterHost
from adapterhub.serving import make_request
from adapterhub.serving.prompts import PromptEncoder

# The attention transformers' continuous batching runs with on a CPU: its paged cache is
# read through a block-diagonal mask ("sdpa"; "paged|eager" is the eager equivalent).
HF_CB_ATTENTION = "sdpa"


def prompt_ids(host: AdapterHost, specs: Sequence[se.Spec]) -> list[list[int]]:
    """The token ids the engine prefills for each request of the mix (its own encoder,
    the request built exactly as ``engine_serve`` builds it)."""
    enc = PromptEncoder(host, host.context_window, 1 << 62)
    return [enc.encode(make_request(s.prompt, None, raw=True, max_tokens=s.max_tokens, temperature=0.0, seed=s.seed), None).ids
            for s in specs]


class _Streams:
    """Routes the manager's shared output queue to one queue per request."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self.queues: dict[str, queue.Queue[Any]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="hf-cb-dispatch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            out = self.manager.get_result(timeout=0.05)
            if out is None:
                continue
            with self.lock:
                q = self.queues.get(out.request_id)
            if q is not None:
                q.put(out)

    def open(self, rid: str) -> queue.Queue[Any]:
        q: queue.Queue[Any] = queue.Queue()
        with self.lock:
            self.queues[rid] = q
        return q

    def close(self, rid: str) -> None:
        with self.lock:
            self.queues.pop(rid, None)

    def shutdown(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def run_hf_cb(model: Any, ids: Sequence[Sequence[int]], specs: Sequence[se.Spec], eos: Sequence[int], clients: int,
              per_client: int, batch_tokens: int | None, page_size: int = 256) -> dict[str, Any]:
    """The closed loop of ``run_engine`` against transformers' continuous batching;
    ``batch_tokens`` is its ``max_batch_tokens`` (None: transformers' default, 8192: a
    new prompt is prefilled whole in the next step, beside the decoding rows)."""
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    n = clients * per_client
    longest = max(len(ids[i]) + specs[i].max_tokens for i in range(n))
    # Blocks for every client's longest request, above the FIFO scheduler's 15% safety
    # margin (under it no new prompt is admitted); sized here because the default takes
    # a share of the machine's free memory.
    blocks = math.ceil(clients * math.ceil(longest / page_size) / 0.85) + 1
    # auto_switch_to_flash=False: in half precision transformers would otherwise look for
    # flash-attention kernels, which the `kernels` package fetches from the Hub; the peer
    # stays offline and on sdpa everywhere.
    cb = ContinuousBatchingConfig(page_size=page_size, num_blocks=blocks, max_batch_tokens=batch_tokens,
                                  allow_block_sharing=False, auto_switch_to_flash=False, seed=0)
    gen = GenerationConfig(do_sample=False, max_new_tokens=max(s.max_tokens for s in specs), eos_token_id=list(eos),
                           pad_token_id=eos[0])
    eos_set = set(eos)
    saved = model.config._attn_implementation
    model.set_attn_implementation(HF_CB_ATTENTION)
    manager = model.init_continuous_batching(generation_config=gen, continuous_batching_config=cb)
    counter = iter(range(1 << 62))
    lock = threading.Lock()

    def ask(i: int, max_tokens: int, streams: _Streams) -> se.Record:
        with lock:
            rid = f"r{next(counter)}"
        q = streams.open(rid)
        rec = se.Record(submitted=time.perf_counter())
        manager.add_request(list(ids[i]), request_id=rid, max_new_tokens=max_tokens, streaming=True, eos_token_id=list(eos))
        seen = 0
        while True:
            try:
                out = q.get(timeout=300)
            except queue.Empty:
                raise RuntimeError(f"transformers' continuous batching gave nothing for {rid} in 300 s "
                                   f"(running: {manager.is_running()})") from None
            if out.error is not None:
                raise RuntimeError(f"transformers' continuous batching failed {rid}: {out.error}")
            new = [t for t in out.generated_tokens[seen:] if t not in eos_set]
            seen = len(out.generated_tokens)
            if new:
                rec.token_times.append(time.perf_counter())
                rec.tokens += len(new)
            if out.is_finished():
                rec.done = time.perf_counter()
                rec.finish = "stop" if out.generated_tokens and out.generated_tokens[-1] in eos_set else "length"
                streams.close(rid)
                return rec

    with torch.inference_mode():
        manager.start()
    streams = _Streams(manager)
    try:
        # First forwards (cache, allocator) outside the timed loop, as the engine's warm-up.
        se.closed_loop(min(clients, n), [[i] for i in range(min(clients, n))], lambda i: ask(i, 4, streams))
        resolved = manager.continuous_batching_config  # sizes filled in once the cache exists
        used = {"attention": model.config._attn_implementation, "page_size": resolved.page_size, "num_blocks": resolved.num_blocks,
                "max_batch_tokens": resolved.max_batch_tokens, "max_requests_per_batch": resolved.max_requests_per_batch,
                "scheduler": resolved.scheduler_type, "allow_block_sharing": resolved.allow_block_sharing}
        jobs = [range(c * per_client, (c + 1) * per_client) for c in range(clients)]
        records, wall = se.closed_loop(clients, jobs, lambda i: ask(i, specs[i].max_tokens, streams))
    finally:
        manager.stop(block=True, timeout=30)
        streams.shutdown()
        manager.destroy()
        model.set_attn_implementation(saved)
    out = se.summarize(records, wall, streamed=True)
    out["hf_cb"] = {"api": "init_continuous_batching + add_request(streaming=True)", **used}
    return out


@torch.inference_mode()
def measure_bound(model: Any, clients: int, prefill_tokens: int, width: int, kv: int,
                  device: str = "cpu") -> dict[str, Any]:
    """The machine's cost of prefill and decode on the bare base, with no scheduler around it."""
    cfg = model.config
    window = int(getattr(cfg, "max_position_embeddings", 2048))
    width = max(1, min(width, window - 1, prefill_tokens))
    rows = max(1, prefill_tokens // width)
    kv = max(1, min(kv, window - 2))
    vocab = int(cfg.vocab_size)
    gen = torch.Generator().manual_seed(0)
    model.eval()

    # (a) one forward of rows × width prompt tokens; a server needs logits at the last position only.
    x = torch.randint(0, vocab, (rows, width), generator=gen).to(device)
    model(input_ids=x[:, :16], logits_to_keep=1)  # allocator, kernels
    prefill = []
    for _ in range(3):
        t0 = time.perf_counter()
        model(input_ids=x, logits_to_keep=1)
        prefill.append(time.perf_counter() - t0)

    # (b) one decode step: clients rows, one new token each over a kv-token cache.
    from transformers import DynamicCache

    heads = int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
    dtype = next(model.parameters()).dtype
    cache = DynamicCache(config=cfg)
    for layer in range(int(cfg.num_hidden_layers)):
        k = torch.randn(clients, heads, kv, head_dim, generator=gen).to(device=device, dtype=dtype)
        cache.update(k, torch.randn(clients, heads, kv, head_dim, generator=gen).to(device=device, dtype=dtype), layer)
    tok = torch.randint(0, vocab, (clients, 1), generator=gen).to(device)
    pos = torch.full((clients, 1), kv, dtype=torch.long, device=device)
    decode = []
    for step in range(12):
        t0 = time.perf_counter()
        model(input_ids=tok, position_ids=pos, cache=cache, use_cache=True)
        dt = time.perf_counter() - t0
        cache.crop(-1)  # drop the new token: every step sees the same kv-token cache
        if step >= 2:  # two warm-up steps
            decode.append(dt)
    return {
        "prefill_rows": rows, "prefill_width": width, "prefill_s": [round(s, 4) for s in prefill],
        "prefill_ms_per_token": statistics.median(prefill) * 1000.0 / (rows * width),
        "decode_rows": clients, "decode_kv_tokens": kv, "decode_step_s": [round(s, 4) for s in decode],
        "decode_step_ms_c": statistics.median(decode) * 1000.0,
    }


def share_of_bound(bound: dict[str, Any], prompt_tokens: int, run: dict[str, Any] | None, clients: int) -> dict[str, Any]:
    """The mix's best-case time on this machine (every prompt token at the large-forward
    rate, every produced token in a full decode step of ``clients`` rows) against the
    engine's measured wall time for the same mix (``run``)."""
    out: dict[str, Any] = {"prompt_tokens": prompt_tokens, "bound_tokens_per_s": None, "share_of_bound": None,
                           "best_case_s": None}
    if run is None or not run.get("completion_tokens"):
        return out
    produced = run["completion_tokens"]
    best = prompt_tokens * bound["prefill_ms_per_token"] / 1000.0 + produced * bound["decode_step_ms_c"] / 1000.0 / clients
    out.update({"completion_tokens": produced, "best_case_s": round(best, 3), "bound_tokens_per_s": produced / best,
                "share_of_bound": best / run["wall_s"] if run["wall_s"] else None})
    return out


def headline(bound: dict[str, Any] | None) -> dict[str, Any]:
    """The bound keys of the benchmark's headline (None where it did not run)."""
    b = bound or {}

    def r(key: str, digits: int) -> float | None:
        return None if b.get(key) is None else round(b[key], digits)

    return {"prefill_ms_per_token": r("prefill_ms_per_token", 4), "decode_step_ms_c": r("decode_step_ms_c", 3),
            "bound_tokens_per_s": r("bound_tokens_per_s", 3), "share_of_bound": r("share_of_bound", 4)}


def markdown_hf_cb(hf: dict[str, Any] | None) -> list[str]:
    if hf is None:
        return []
    c = hf["hf_cb"]
    return [f"transformers continuous batching (hf_cb): {c['api']}, attention {c['attention']}, max_batch_tokens "
            f"{c['max_batch_tokens']}, {c['num_blocks']} blocks of {c['page_size']} tokens, {c['scheduler']} scheduler; the "
            "engine's prompt token ids and max_tokens, greedy, streamed to the same closed loop.", ""]


def markdown_bound(bound: dict[str, Any] | None) -> list[str]:
    if bound is None:
        return []
    f = se.fmt
    return [
        f"Bound: prefill {f(bound['prefill_ms_per_token'], '.3f')} ms/token (one forward of {bound['prefill_rows']} × "
        f"{bound['prefill_width']} tokens), decode step {f(bound['decode_step_ms_c'])} ms at {bound['decode_rows']} rows "
        f"({bound['decode_kv_tokens']} cached tokens each); the mix's {bound['prompt_tokens']} prompt tokens and the "
        f"{bound.get('completion_tokens', '—')} tokens the 8-adapter workload produced take at best {f(bound['best_case_s'], '.2f')} s "
        f"= {f(bound['bound_tokens_per_s'])} tok/s; the engine (8 adapters) reaches {f(bound['share_of_bound'], '.3f')} of it.",
        "",
    ]
