"""Batched greedy decoding with per-row adapter routing.

The loop is method-agnostic: every method runtime that has rows in the batch enters
its ``route`` context for the whole generation (LoRA sets per-row slot indices, prefix
tuning injects per-row prefixes into the cache and widens the attention mask, a
selective adapter swaps its tensors in). The prefill forward uses whatever kwargs the
routes produced; each decode step then appends one mask column and advances the
per-row positions, which is all any route needs to stay correct.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch

from adapterhub.protocols.method import MethodRuntime

Route = tuple[MethodRuntime, Sequence[str | None]]


@dataclass
class Decoded:
    """Generated token ids per row (without the prompt, cut after the first EOS)."""

    token_ids: list[list[int]]
    prefill_logits: torch.Tensor | None = None


def _cache_of(out: Any) -> Any:
    # transformers 5 renamed past_key_values → cache; accept either spelling.
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _positions(mask: torch.Tensor, length: int) -> torch.Tensor:
    # Left padding: real tokens count from 0 within each row; pads get position 0.
    return (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -length:]


def enter_routes(stack: ExitStack, routes: Sequence[Route], kwargs: dict[str, Any]) -> dict[str, Any]:
    for runtime, rows in routes:
        if any(r is not None for r in rows):
            kwargs = stack.enter_context(runtime.route(rows, kwargs))
    return kwargs


def _model_kwargs(kwargs: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
    mask = kwargs["attention_mask"]
    call = dict(kwargs)
    if call.get("position_ids") is None:
        call["position_ids"] = _positions(mask, call["input_ids"].shape[1])
    if "past_key_values" in call and "cache" not in call:
        call["cache"] = call.pop("past_key_values")
    return mask, call


@torch.no_grad()
def prefill_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, routes: Sequence[Route]) -> torch.Tensor:
    """Full logits (B, T, V) of one routed forward over the (left-padded) prompts."""
    with ExitStack() as stack:
        kwargs = enter_routes(stack, routes, {"input_ids": input_ids, "attention_mask": attention_mask})
        _, call = _model_kwargs(kwargs)
        out = model(**call, use_cache=False)
        return out.logits.float()


@torch.no_grad()
def greedy_generate(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    routes: Sequence[Route],
    *,
    max_new_tokens: int,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
) -> Decoded:
    batch = input_ids.shape[0]
    device = input_ids.device
    eos = torch.tensor(sorted(set(eos_token_ids)) or [-1], device=device)
    generated: list[torch.Tensor] = []
    with ExitStack() as stack:
        kwargs = enter_routes(stack, routes, {"input_ids": input_ids, "attention_mask": attention_mask})
        mask, call = _model_kwargs(kwargs)
        positions = call["position_ids"]
        # Only the last position's logits are needed to pick the next token.
        out = model(**call, use_cache=True, logits_to_keep=1)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        for _ in range(max_new_tokens):
            nxt = out.logits[:, -1].argmax(-1)
            nxt = torch.where(finished, torch.full_like(nxt, pad_token_id), nxt)
            generated.append(nxt)
            finished |= torch.isin(nxt, eos)
            if bool(finished.all()) or len(generated) == max_new_tokens:
                break
            mask = torch.cat([mask, torch.ones(batch, 1, dtype=mask.dtype, device=device)], dim=-1)
            positions = positions[:, -1:] + 1
            out = model(
                input_ids=nxt[:, None],
                attention_mask=mask,
                position_ids=positions,
                cache=_cache_of(out),
                use_cache=True,
                logits_to_keep=1,
            )
    rows: list[list[int]] = []
    if generated:
        seq = torch.stack(generated, dim=1).tolist()
    else:
        seq = [[] for _ in range(batch)]
    eos_set = set(eos_token_ids)
    for row in seq:
        cut: list[int] = []
        for tok in row:
            if tok in eos_set:
                break
            cut.append(tok)
        rows.append(cut)
    return Decoded(token_ids=rows)
