"""What a sampled token becomes for the client: a delta, and whether the request ends.

Pure bookkeeping over a row (text decoding, stop strings, logprobs, length): no tensor
work beyond one row's logprobs, no scheduling, no handle. The engine pushes what this
returns and finishes the row when it says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

import torch

from adapterhub.serving.request import Completion, Delta, FinishReason, TokenLogprob
from adapterhub.serving.rows import Row
from adapterhub.serving.sampling import logprobs_of


def token_output(
    row: Row, token: int, logits: torch.Tensor, *, eos: Collection[int], decode: Callable[[list[int]], str],
) -> tuple[Delta, FinishReason | None]:
    """The delta one sampled ``token`` produces for ``row``, and its finish reason if the
    request ends with it (an end-of-sequence token, a stop string, ``max_tokens``)."""
    if row.first_token_at is None:
        row.first_token_at = time.perf_counter()
    sp = row.request.sampling
    if token in eos:
        if sp.logprobs:  # not part of the answer, but clients that score it may read it
            lp, top = logprobs_of(logits, token, sp.top_logprobs)
            row.end_logprob = TokenLogprob(token, decode([token]), lp, tuple((t, decode([t]), v) for t, v in top))
        return Delta("", []), "stop"  # the end token itself is never part of the answer
    assert row.text is not None, "admitted rows have a text stream"
    row.out_ids.append(token)
    lps: list[TokenLogprob] = []
    if sp.logprobs:
        lp, top = logprobs_of(logits, token, sp.top_logprobs)
        lps = [TokenLogprob(token, decode([token]), lp, tuple((t, decode([t]), v) for t, v in top))]
        row.logprobs.extend(lps)
    text = row.text.push(token)
    if row.text.stopped:
        return Delta(text, [token], lps), "stop"
    if len(row.out_ids) >= sp.max_tokens:
        return Delta(text, [token], lps), "length"
    return Delta(text, [token], lps), None


def completion_of(row: Row, reason: FinishReason, decode: Callable[[list[int]], str]) -> Completion:
    """The finished request as its handle reports it."""
    req = row.request
    prompt_text = None
    if req.echo:
        prompt_text = req.prompt if req.prompt is not None else decode(list(req.prompt_ids or ()))
    return Completion(
        request_id=row.rid,
        text="" if row.text is None else row.text.text,
        token_ids=list(row.out_ids),
        finish_reason=reason,
        adapter=row.label,
        prompt_tokens=len(row.prompt_ids),
        logprobs=row.logprobs,
        ttft_s=None if row.first_token_at is None else row.first_token_at - row.submitted,
        latency_s=time.perf_counter() - row.submitted,
        prompt_token_ids=list(row.prompt_ids),
        prompt_logprobs=list(row.prompt_logprobs) if row.request.sampling.prompt_logprobs is not None else None,
        end_logprob=row.end_logprob,
        prompt_text=prompt_text,
    )
