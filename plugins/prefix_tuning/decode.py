"""A generic greedy decoder that continues from any prefill kwargs (prefixes or not).

It is the decoding convention the prefix runtime relies on: the prefill forward gets
whatever kwargs ``route`` produced; every later step passes the returned cache, appends
a ``1`` column to the attention mask and uses ``position_ids = last position + 1`` per
row. Nothing here knows about prefixes, so it serves base, LoRA and prefix rows alike.
Inputs must be left-padded (the last column is every row's newest real token).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from adapterhub.plugins.prefix_tuning.layout import cache_kwarg, output_cache, token_positions
from torch import nn


@dataclass
class DecodeResult:
    """Generated token ids per row (up to and including the first EOS) and the prefill logits."""

    tokens: list[list[int]]
    prefill_logits: torch.Tensor


def _eos_set(eos_token_id: int | Iterable[int] | None) -> list[int]:
    if eos_token_id is None:
        return []
    if isinstance(eos_token_id, int):
        return [eos_token_id]
    return [int(e) for e in eos_token_id]


@torch.no_grad()
def greedy_decode(
    model: nn.Module,
    kwargs: Mapping[str, Any],
    max_new_tokens: int,
    eos_token_id: int | Iterable[int] | None = None,
) -> DecodeResult:
    """Greedy decoding from prefill ``kwargs`` (``input_ids``, ``attention_mask``, ...).

    Without explicit ``position_ids`` they are derived from the mask (left padding
    skipped), like transformers' ``generate``. Finished rows keep being fed EOS (their
    outputs are discarded) so the batch stays rectangular.
    """
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    kw = dict(kwargs)
    ids = kw.get("input_ids")
    ref = ids if ids is not None else kw["inputs_embeds"]
    batch, length = int(ref.shape[0]), int(ref.shape[1])
    device = ref.device
    mask = kw.get("attention_mask")
    if kw.get("position_ids") is None:
        kw["position_ids"] = token_positions(mask, batch, length, torch.zeros(batch, dtype=torch.long), device)
    kw["use_cache"] = True
    out = model(**kw)
    prefill_logits = out.logits
    cache_key = cache_kwarg(model)
    cache = output_cache(out)
    pos = kw["position_ids"][:, -1:]
    mask = kw.get("attention_mask")

    eos = _eos_set(eos_token_id)
    eos_t = torch.tensor(eos, device=device, dtype=torch.long)
    filler = eos[0] if eos else 0
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    columns: list[torch.Tensor] = []
    next_tok = out.logits[:, -1].argmax(-1)
    for step in range(max_new_tokens):
        next_tok = torch.where(done, torch.full_like(next_tok, filler), next_tok)
        columns.append(torch.where(done, torch.full_like(next_tok, -1), next_tok))
        if eos:
            done = done | torch.isin(next_tok, eos_t)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
        pos = pos + 1
        out = model(input_ids=next_tok.view(batch, 1), attention_mask=mask, position_ids=pos,
                    use_cache=True, **{cache_key: cache})
        cache = output_cache(out)
        next_tok = out.logits[:, -1].argmax(-1)

    generated = torch.stack(columns, dim=1).tolist()
    tokens = [[t for t in row if t >= 0] for row in generated]
    return DecodeResult(tokens=tokens, prefill_logits=prefill_logits)
