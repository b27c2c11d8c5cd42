"""A request's prompt as token ids, and every limit that can be checked before it queues.

One place turns a request into the ids the engine prefills: a text prompt or chat messages
are rendered as the serving adapter version was trained (:meth:`AdapterHost.render`, which
goes through ``adapterhub/prompting.py``), token ids are taken as they are. Then the
context window, ``--max-kv-tokens`` and the vocabulary are checked, each with its own
one-line error. It runs on the caller's thread at ``submit`` (the HTTP layer calls that in
a worker thread), or on the engine thread when a cold adapter's template arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adapterhub.errors import ConfigError, ContextLengthError

if TYPE_CHECKING:
    from adapterhub.host.host import AdapterHost
    from adapterhub.host.pool import PoolEntry
    from adapterhub.serving.request import Request


def max_prompt_chars(tokenizer: Any, max_tokens: int) -> int | None:
    """Characters that ``max_tokens`` tokens can cover at most: the longest vocabulary
    entry times the window, doubled for normalizers that compose characters. None when
    the tokenizer does not list its vocabulary (then every prompt is tokenized)."""
    try:
        longest = max(len(t) for t in tokenizer.get_vocab())
    except Exception:  # noqa: BLE001 - a bound is an optimisation, never a requirement
        return None
    return 2 * longest * max_tokens if longest > 0 else None


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    reserved: int
    """prompt + ``max_tokens``: what the row reserves of ``max_kv_tokens``."""


class PromptEncoder:
    """Requests into checked token ids for one host (see module docs)."""

    def __init__(self, host: AdapterHost, max_model_len: int, max_kv_tokens: int) -> None:
        self.host = host
        self.max_model_len = max_model_len
        self.max_kv_tokens = max_kv_tokens
        self.max_prompt_chars = max_prompt_chars(host.tokenizer, max_model_len)

    def encode(self, req: Request, entry: PoolEntry | None) -> Encoded:
        if req.prompt_ids is not None:  # token ids: never templated, checked against the vocabulary
            ids: list[int] = list(req.prompt_ids)
            vocab = len(self.host.tokenizer)
            if max(ids) >= vocab:
                raise ConfigError(f"invalid prompt: token id {max(ids)} is outside the vocabulary (0..{vocab - 1})")
        else:
            text = self.host.render(req.prompt if req.prompt is not None else req.chat(), entry, raw=req.raw)
            if self.max_prompt_chars is not None and len(text) > self.max_prompt_chars:
                # Cannot fit whatever the tokenizer does: refused without tokenizing it (a
                # 4 MB prompt costs seconds of tokenizer time, much of it holding the GIL).
                raise ContextLengthError(
                    f"the prompt has {len(text)} characters, more than {self.max_model_len} tokens can hold "
                    f"(at most {self.max_prompt_chars} characters for this tokenizer)"
                )
            ids = list(self.host.tokenizer(text, add_special_tokens=False)["input_ids"])
        if not ids:
            raise ContextLengthError("the prompt is empty after tokenization")
        total = len(ids) + req.sampling.max_tokens
        if total > self.max_model_len:
            raise ContextLengthError(
                f"prompt ({len(ids)} tokens) + max_tokens ({req.sampling.max_tokens}) = {total} "
                f"exceeds the context window of {self.max_model_len} tokens"
            )
        if total > self.max_kv_tokens:
            raise ContextLengthError(f"prompt + max_tokens = {total} exceeds --max-kv-tokens {self.max_kv_tokens}")
        return Encoded(ids, total)
