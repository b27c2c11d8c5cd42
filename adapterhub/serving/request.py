"""What a client asks the engine for, and what it gets back.

``Request`` and ``SamplingParams`` are frozen pydantic models with unknown fields
refused, so a typo (``temprature``) is a one-line :class:`ConfigError` instead of a
silently ignored setting. The HTTP layer builds them from OpenAI-style JSON; the CLI
and Python callers build them directly.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from adapterhub.errors import ConfigError

MAX_STOP = 16
"""Stop strings per request (OpenAI allows 4; more only costs a substring search)."""
MAX_TOP_LOGPROBS = 5

FinishReason = Literal["stop", "length", "cancelled", "error"]


class Constraint(BaseModel):
    """Structured output: the answer must be JSON (``json_object``), or JSON valid against
    ``schema`` (a JSON Schema as a string, as the client sent it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["json_object", "json_schema"]
    json_schema: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Constraint:
        if (self.kind == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema needs a schema, json_object takes none")
        return self


class SamplingParams(BaseModel):
    """How the next token is picked. ``temperature=0`` is greedy (argmax)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(default=0.0, ge=0.0, le=100.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, description="0: no top-k cut")
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    stop: tuple[str, ...] = ()
    max_tokens: int = Field(default=64, ge=0, description="0: score the prompt only (with prompt_logprobs)")
    logprobs: bool = False
    top_logprobs: int = Field(default=0, ge=0, le=MAX_TOP_LOGPROBS)
    prompt_logprobs: int | None = Field(
        default=None, ge=0, le=MAX_TOP_LOGPROBS,
        description="log-probability of every prompt token (and this many alternatives), from the prefill forward",
    )
    constraint: Constraint | None = Field(default=None, description="structured output: what the answer must parse as")

    @model_validator(mode="after")
    def _check(self) -> SamplingParams:
        if len(self.stop) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs=true")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class Request(BaseModel):
    """One completion request: a prompt or chat messages, an adapter, sampling."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str | None = None
    messages: tuple[Message, ...] | None = None
    prompt_ids: tuple[int, ...] | None = Field(default=None, description="a prompt given as token ids (never templated)")
    adapter: str | None = Field(
        default=None, description="pool name, registry ref (name, name@version, name:tag), or None/'<base>' for the bare base"
    )
    raw: bool = Field(default=False, description="send the prompt as it is (no chat template), as /v1/completions does")
    sampling: SamplingParams = SamplingParams()
    request_id: str | None = None
    echo: bool = Field(default=False, description="the completion carries the prompt's text (OpenAI's echo)")

    @model_validator(mode="after")
    def _check(self) -> Request:
        if sum(x is not None for x in (self.prompt, self.messages, self.prompt_ids)) != 1:
            raise ValueError("give exactly one of prompt, messages or prompt token ids")
        if self.prompt_ids is not None and (not self.prompt_ids or min(self.prompt_ids) < 0):
            raise ValueError("prompt token ids must be a non-empty list of ids >= 0")
        if self.messages is not None:
            if not self.messages or self.messages[-1].role != "user":
                raise ValueError("messages must end with a user message")
            if self.raw:
                raise ValueError("raw applies to a prompt, not to chat messages")
        return self

    def chat(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in self.messages or ()]


def make_request(
    prompt: str | Sequence[Mapping[str, str]] | Sequence[int],
    adapter: str | None = None,
    *,
    raw: bool = False,
    request_id: str | None = None,
    echo: bool = False,
    **sampling: Any,
) -> Request:
    """Build a :class:`Request`; a string is a prompt, a list of ints its token ids, a
    list of ``{"role", "content"}`` mappings chat messages.

    Bad values raise :class:`ConfigError` with one line naming the field.
    """
    try:
        params = SamplingParams(**sampling)
        if isinstance(prompt, str):
            return Request(prompt=prompt, adapter=adapter, raw=raw, sampling=params, request_id=request_id, echo=echo)
        if prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            ids = tuple(int(cast("int", t)) for t in prompt)
            return Request(prompt_ids=ids, adapter=adapter, raw=True, sampling=params, request_id=request_id, echo=echo)
        msgs = tuple(Message.model_validate(dict(cast("Mapping[str, str]", m))) for m in prompt)
        return Request(messages=msgs, adapter=adapter, sampling=params, request_id=request_id)
    except ValidationError as exc:
        raise ConfigError(one_line(exc)) from None


def one_line(exc: ValidationError) -> str:
    """``field: reason`` of a pydantic error's first problem."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "request"
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"invalid {where}: {msg}"


@dataclass(frozen=True)
class TokenLogprob:
    """The chosen token's log-probability, and the most likely alternatives."""

    token_id: int
    token: str
    logprob: float | None
    """None only for a prompt's first token (nothing predicts it)."""
    top: tuple[tuple[int, str, float], ...] = ()


@dataclass
class Delta:
    """One streamed piece: new text (may be empty while a stop string may still match),
    the new token ids, their logprobs, and on the last delta the finish reason."""

    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    t: float = field(default_factory=time.perf_counter)
    """When the engine produced it (``time.perf_counter``): TTFT and inter-token gaps
    measured here exclude the consumer's own delays."""


@dataclass
class Completion:
    """The finished request. ``adapter`` is the ``name@version`` that served it."""

    request_id: str
    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    adapter: str | None
    prompt_tokens: int
    logprobs: list[TokenLogprob] = field(default_factory=list)
    ttft_s: float | None = None
    latency_s: float = 0.0
    prompt_token_ids: list[int] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob] | None = None
    """With ``prompt_logprobs``: one entry per prompt token (the first has no logprob:
    nothing predicts it), computed in the prefill forward."""
    prompt_text: str | None = None
    """With ``echo``: the prompt as sent (a text prompt) or decoded (token ids)."""
    end_logprob: TokenLogprob | None = None
    """With ``logprobs``: the end-of-sequence token that finished the request (not part of
    the text or ``token_ids``), for clients that score it, as OpenAI reports it."""

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id, "adapter": self.adapter, "text": self.text,
            "token_ids": self.token_ids, "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
        }
