"""OpenAI's wire formats: completion bodies, stream chunks, SSE framing, usage, logprobs,
and the per-call bookkeeping (ids, timing from the engine's ``Delta.t``, metrics)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from adapterhub import logs
from adapterhub.access import note
from adapterhub.serving.request import Completion, Delta, TokenLogprob

if TYPE_CHECKING:
    from adapterhub.serving.handle import RequestHandle
    from adapterhub.serving.http.keys import Principal
    from adapterhub.serving.http.state import ServerState

DONE = b"data: [DONE]\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_logprobs(lps: list[TokenLogprob]) -> dict[str, Any]:
    def one(token: str, lp: float | None) -> dict[str, Any]:  # None: a prompt's first token only
        return {"token": token, "logprob": lp, "bytes": list(token.encode("utf-8"))}

    return {"content": [
        {**one(t.token, t.logprob), "top_logprobs": [one(tok, v) for _, tok, v in t.top]} for t in lps
    ], "refusal": None}


def completion_logprobs(lps: list[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """OpenAI's legacy format. With ``echo`` the prompt's tokens come first; the very first
    has no logprob (``null``), as OpenAI and vLLM answer."""
    offsets, pos = [], offset
    for t in lps:
        offsets.append(pos)
        pos += len(t.token)
    return {
        "tokens": [t.token for t in lps],
        "token_logprobs": [t.logprob for t in lps],
        "top_logprobs": ([None if t.logprob is None else {tok: v for _, tok, v in t.top} for t in lps]
                         if any(t.top for t in lps) else None),
        "text_offset": offsets,
    }


def finish_reason(r: str) -> str:
    # "cancelled" only reaches a client that is still there when the server shuts down.
    return r if r in ("stop", "length") else "stop"


def sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


@dataclass
class Call:
    """One completion call in flight: what the route needs to answer and to count."""

    state: ServerState
    kind: str  # "chat" | "completions"
    model: str
    principal: Principal
    handle: RequestHandle
    want_logprobs: bool
    echo: bool = False
    """``echo``: the prompt's text (``Completion.prompt_text``) goes before the answer, and
    its tokens before the answer's in ``logprobs``."""
    rid: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    created: int = field(default_factory=lambda: int(time.time()))
    first_token_at: float | None = None
    last_token_at: float | None = None
    gaps: list[tuple[float, int]] = field(default_factory=list)  # (seconds per token, tokens)

    @property
    def object_id(self) -> str:
        return ("chatcmpl-" if self.kind == "chat" else "cmpl-") + self.rid

    def label(self, c: Completion | None = None) -> str:
        """The served ``name@version`` (pinned by the engine before the first delta), or
        the base alias."""
        return (c.adapter if c is not None else None) or self.handle.adapter or self.state.base_alias

    def observe(self, d: Delta) -> None:
        """Note when the engine produced tokens (``Delta.t``), so TTFT and inter-token
        gaps exclude this server's own delays; observed into the histograms at the end,
        under the label of the adapter that served the request."""
        if not d.token_ids:
            return
        if self.first_token_at is None:
            self.first_token_at = d.t
        elif self.last_token_at is not None:
            self.gaps.append(((d.t - self.last_token_at) / len(d.token_ids), len(d.token_ids)))
        self.last_token_at = d.t

    def count(self, status: int, c: Completion | None) -> None:
        """Metrics and the access line's fields, once, when the call ends."""
        m, adapter = self.state.metrics, self.label(c) if status < 400 or c is not None else "-"
        m.requests.labels(self.kind, str(status), adapter, self.principal.name).inc()
        submitted = self.handle.submitted
        note(status=status, adapter=adapter,
             ttft_ms=None if self.first_token_at is None else round((self.first_token_at - submitted) * 1000.0, 1))
        if c is None:
            return
        note(prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens, finish_reason=c.finish_reason)
        if logs.LOG_PROMPTS:
            note(completion=c.text)
        m.prompt_tokens.labels(adapter).inc(c.prompt_tokens)
        m.completion_tokens.labels(adapter).inc(c.completion_tokens)
        m.latency.labels(adapter).observe((self.last_token_at or time.perf_counter()) - submitted)
        if self.first_token_at is not None:
            m.ttft.labels(adapter).observe(self.first_token_at - submitted)
        itl = m.itl.labels(adapter)
        for gap, n in self.gaps:
            for _ in range(n):
                itl.observe(gap)

    def body(self, c: Completion, index: int = 0) -> dict[str, Any]:
        if self.kind == "chat":
            choice: dict[str, Any] = {
                "index": 0, "message": {"role": "assistant", "content": c.text, "refusal": None},
                "finish_reason": finish_reason(c.finish_reason),
                "logprobs": chat_logprobs(c.logprobs) if self.want_logprobs else None,
            }
            obj = "chat.completion"
        else:
            # The end token is not part of the text, but scoring clients read its logprob
            # (lm-evaluation-harness drops the last entry, expecting the generated token).
            lps = list(c.logprobs) + ([c.end_logprob] if c.end_logprob is not None else [])
            if self.echo:
                lps = list(c.prompt_logprobs or []) + lps
            choice = {
                "index": index, "text": (c.prompt_text or "") + c.text if self.echo else c.text, "finish_reason": finish_reason(c.finish_reason),
                "logprobs": completion_logprobs(lps) if self.want_logprobs else None,
            }
            obj = "text_completion"
        return {
            "id": self.object_id, "object": obj, "created": self.created, "model": self.label(c),
            "choices": [choice], "usage": usage(c.prompt_tokens, c.completion_tokens),
            "system_fingerprint": None,
        }

    def chunk(self, d: Delta, first: bool, offset: int) -> dict[str, Any]:
        reason = finish_reason(d.finish_reason) if d.finish_reason else None
        if self.kind == "chat":
            delta: dict[str, Any] = {"content": d.text}
            if first:
                delta["role"] = "assistant"
            choice: dict[str, Any] = {
                "index": 0, "delta": delta, "finish_reason": reason,
                "logprobs": chat_logprobs(d.logprobs) if self.want_logprobs else None,
            }
            obj = "chat.completion.chunk"
        else:
            choice = {
                "index": 0, "text": d.text, "finish_reason": reason,
                "logprobs": completion_logprobs(d.logprobs, offset) if self.want_logprobs else None,
            }
            obj = "text_completion"
        return {"id": self.object_id, "object": obj, "created": self.created, "model": self.label(),
                "choices": [choice], "system_fingerprint": None}
