"""Picking each row's next token from one step's logits.

Greedy rows are one vectorised argmax over the batch. A sampled row draws from its own
``torch.Generator`` (seeded from the request's ``seed``), so the tokens a seeded request
gets depend on its own logits and seed only, never on which other rows share the step
or in what order. Logprobs are those of the model's distribution (``log_softmax`` of
the raw logits, before temperature and top-k/top-p), as OpenAI and vLLM report them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from adapterhub.serving.request import SamplingParams


def new_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for one request on the device its logits live on (a random seed when
    none is given). On the CPU a seed gives the same tokens as before sampling moved to
    the device; on an accelerator the stream is the device's own, reproducible there."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(8), "little") >> 1)
    return gen


def _filtered(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """Temperature-scaled logits with top-k and top-p cut to -inf (one row, float32)."""
    x = logits / p.temperature
    if p.top_k and p.top_k < x.shape[-1]:
        kth = torch.topk(x, p.top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    if p.top_p < 1.0:
        sorted_x, order = torch.sort(x, descending=True)
        probs = torch.softmax(sorted_x, dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        drop = probs.cumsum(-1) - probs >= p.top_p
        sorted_x = sorted_x.masked_fill(drop, float("-inf"))
        x = torch.empty_like(x).scatter_(-1, order, sorted_x)
    return x


def pick(logits: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator]) -> list[int]:
    """The next token of every row: ``logits`` is ``(rows, vocab)`` float32 on the model's
    device. Every op stays there (argmax, filtering, the seeded draw written into the
    token tensor); the one ``tolist`` at the end is the step's only host sync."""
    tokens = logits.argmax(-1)
    for i, p in enumerate(params):
        if p.greedy:
            continue
        probs = torch.softmax(_filtered(logits[i], p), dim=-1)
        tokens[i] = torch.multinomial(probs, 1, generator=generators[i])[0]
    return [int(t) for t in tokens.tolist()]


def logprobs_of(logits: torch.Tensor, token_id: int, top: int) -> tuple[float, list[tuple[int, float]]]:
    """Log-probability of ``token_id`` in one row, and the ``top`` most likely tokens."""
    lp = torch.log_softmax(logits, dim=-1)
    alternatives: list[tuple[int, float]] = []
    if top:
        values, ids = torch.topk(lp, top)
        alternatives = [(int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]
    return float(lp[token_id]), alternatives
