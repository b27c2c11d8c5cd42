"""The conformance check ``route_tokens``: a packed runtime serves packed forwards right.

A runtime that implements :class:`~adapterhub.protocols.method.PackedRuntime` takes part
in the serving engine's one-forward-per-step: several requests' tokens laid end to end
in one batch-1 sequence, each attending to its own cache (``adapterhub.host.packed``).
The check runs three requests of different lengths on two adapters and none (one
adapter for a method without ``mixed_batch``) through two packed forwards, the first
half of every prompt and then the rest, each request's cache seeded with
``initial_kv``; every position's logits must equal the request run alone through
``route`` (``route_atol``). A method without ``mixed_batch`` must refuse spans on two
adapters with ``IncompatibleAdapterError``. Runtimes without ``PackedRuntime`` are not
checked: the engine serves their rows with per-row forwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from adapterhub.errors import IncompatibleAdapterError
from adapterhub.host.packed import Chunk, RowKV, packed_forward
from adapterhub.protocols.method import PackedRuntime, TokenSpan

if TYPE_CHECKING:
    from adapterhub.testing.methods import MethodCase


def _geometry(model: torch.nn.Module) -> tuple[int, int, int]:
    cfg: Any = model.config
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    heads = int(text.num_attention_heads)
    kv = int(getattr(text, "num_key_value_heads", None) or heads)
    dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
    return int(text.num_hidden_layers), kv, dim


def is_packed(case: MethodCase) -> bool:
    """Whether the case's runtime implements ``PackedRuntime`` (builds one on a fresh base)."""
    if not case.method.capabilities.hot_swap:
        return False
    if "packed" not in case._cache:
        case._cache["packed"] = isinstance(case.method.runtime(case.model_factory()), PackedRuntime)
    return bool(case._cache["packed"])


def check_route_tokens(case: MethodCase) -> None:
    from adapterhub.testing.methods import _trained

    c = "route_tokens"
    state, _ = _trained(case)  # trains (with grad) once per case
    with torch.no_grad():
        _check(case, c, state)


def _check(case: MethodCase, c: str, state: dict[str, torch.Tensor]) -> None:
    from adapterhub.testing.methods import (
        NotApplicable,
        _apply,
        _assert_equal,
        _fail,
        _logits,
        _runtime,
        _second_adapter,
    )

    model, rt = _runtime(case, c)
    if not isinstance(rt, PackedRuntime):
        raise NotApplicable("the runtime does not implement PackedRuntime (the engine gives its rows per-row forwards)")
    model.eval()
    _apply(case, c, rt, "conf-a", state)
    mixed = case.method.capabilities.mixed_batch
    if mixed:
        _apply(case, c, rt, "conf-b", _second_adapter(case))
    adapters: list[str | None] = ["conf-a", None, "conf-b"] if mixed else ["conf-a"] * 3
    vocab = int(getattr(model.config, "vocab_size", 256) or 256)
    gen = torch.Generator().manual_seed(4321)
    device = next(model.parameters()).device
    prompts = [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in (case.seq_len, case.seq_len - 3, 3)]

    alone = []
    for ids, a in zip(prompts, adapters, strict=True):
        t = torch.tensor([ids], device=device)
        with rt.route([a], {"input_ids": t, "attention_mask": torch.ones_like(t)}) as kwargs:
            alone.append(_logits(model, kwargs)[0])

    layers, kv_heads, dim = _geometry(model)
    dtype = next(model.parameters()).dtype
    rows, starts = [], []
    for ids, a in zip(prompts, adapters, strict=True):
        initial = rt.initial_kv(a) if a is not None else None
        t0 = 0 if initial is None else int(initial[0].shape[2])
        row = RowKV(layers, kv_heads, dim, t0 + len(ids), dtype=dtype, device=device)
        if initial is not None:
            row.extend(*initial)
        rows.append(row)
        starts.append(t0)

    got: list[list[torch.Tensor]] = [[] for _ in prompts]
    done = [0] * len(prompts)
    for half in (0, 1):  # the first half of every prompt, then the rest: continuing rows
        segments: list[Chunk] = []
        ids_: list[int] = []
        pos: list[int] = []
        spans: list[TokenSpan] = []
        where: list[tuple[int, int, int]] = []
        for i, ids in enumerate(prompts):
            stop = len(ids) if half else max(1, len(ids) // 2)
            n = stop - done[i]
            if n <= 0:
                continue
            at = len(ids_)
            segments.append(rows[i].chunk(n))
            ids_.extend(ids[done[i] : stop])
            pos.extend(range(starts[i] + done[i], starts[i] + stop))
            if adapters[i] is not None:
                spans.append(TokenSpan(adapters[i], at, at + n))
            where.append((i, at, n))
            done[i] = stop
        keep = torch.arange(len(ids_), device=device)
        logits = packed_forward(model, torch.tensor([ids_], device=device), torch.tensor([pos], device=device),
                                segments, [(rt, spans)] if spans else [], keep).float().cpu()
        for seg in segments:
            seg.commit()
        for i, at, n in where:
            got[i].append(logits[at : at + n])
    for i, (a, want) in enumerate(zip(adapters, alone, strict=True)):
        _assert_equal(case, c, torch.cat(got[i]), want, case.route_atol,
                      f"request {i} ({a}) in packed forwards vs. alone through route()")

    if not mixed:
        _apply(case, c, rt, "conf-b", _second_adapter(case))
        t = torch.tensor([prompts[0] + prompts[2]], device=device)
        n = len(prompts[0])
        spans = [TokenSpan("conf-a", 0, n), TokenSpan("conf-b", n, t.shape[1])]
        try:
            with rt.route_tokens(spans, {"input_ids": t, "position_ids": t}):
                pass
        except IncompatibleAdapterError:
            return
        raise _fail(case, c, "a runtime without mixed_batch must refuse spans on two adapters (IncompatibleAdapterError)")
