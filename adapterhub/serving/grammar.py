"""Structured output: ``response_format`` as constrained decoding, one grammar matcher per row.

xgrammar compiles a JSON Schema (or its built-in JSON grammar for ``json_object``) against
the base's vocabulary once, then each constrained row keeps a matcher: before the row's
token is sampled, the matcher's bitmask sets every token the grammar forbids to -inf
(on a copy: logprobs still report the model's own distribution); after, the token
advances the matcher. Constrained and free rows share every forward; the mask touches
only the sampled row's logits, so every adapter kind works the same. A finished JSON
value only allows an end-of-sequence token, so the request ends with ``stop`` (a
``max_tokens`` cut ends it with ``length``, and the text is then incomplete, as with
OpenAI).

Why xgrammar (BENCHMARKS.md, "Structured output"): on this CPU it costs 0.14-0.21 ms per
token whatever the schema, where outlines-core costs 0.014 ms on tight schemas but 2.9 ms
once a free string is allowed (it hands back the allowed token list), and it compiles a
schema in 1-5 ms against outlines-core's 40-70 ms; only a real grammar expresses
``json_object`` (arbitrary nesting), which a regex cannot. xgrammar declares ``triton``
(1 GB of GPU kernels) as a dependency; the CPU path never imports it, so the Makefile
installs xgrammar with ``--no-deps`` beside its one other runtime need, apache-tvm-ffi.

Whitespace between JSON tokens is fixed (``any_whitespace=False``): a small model that
may emit whitespace forever inside a free grammar never gets the chance. xgrammar's
string rule lets raw control characters (0x00-0x1f but \\n and \\r) into strings,
which strict JSON parsers (Python's ``json``, JavaScript's ``JSON.parse``) refuse: every
token whose text holds one is masked too, since compact JSON never needs them raw
(``\\u001e`` stays available).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import torch

from adapterhub.errors import ConfigError
from adapterhub.serving.request import Constraint

CACHE = 64
"""Compiled grammars kept (by schema text); a server sees few distinct schemas."""


class GrammarBackend:
    """Compiles constraints for one tokenizer and makes per-row matchers (thread-safe)."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: list[int]) -> None:
        self._tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._stop_ids = stop_ids
        self._lock = threading.Lock()
        self._compiler: Any = None
        self._compiled: OrderedDict[tuple[str, str | None], Any] = OrderedDict()
        self._control: torch.Tensor | None = None

    def _xgr(self) -> Any:
        try:
            import xgrammar
        except ImportError:  # pragma: no cover - installed by the Makefile
            raise ConfigError("invalid response_format: structured output needs xgrammar "
                              "(pip install --no-deps xgrammar apache-tvm-ffi)") from None
        return xgrammar

    def compile(self, constraint: Constraint) -> Any:
        """The compiled grammar (cached); ConfigError naming the reason when it cannot compile."""
        key = (constraint.kind, constraint.json_schema)
        with self._lock:
            hit = self._compiled.get(key)
            if hit is not None:
                self._compiled.move_to_end(key)
                return hit
            xgr = self._xgr()
            if self._compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(self._tokenizer, vocab_size=self.vocab_size,
                                                          stop_token_ids=self._stop_ids)
                self._compiler = xgr.GrammarCompiler(info, max_threads=1)
            try:
                if constraint.json_schema is None:
                    compiled = self._compiler.compile_builtin_json_grammar()
                else:
                    compiled = self._compiler.compile_json_schema(constraint.json_schema, any_whitespace=False)
            except Exception as exc:  # noqa: BLE001 - xgrammar raises RuntimeError/ValueError with the reason
                reason = " ".join(str(exc).split())
                reason = reason.split("] ", 1)[-1] if reason.startswith("[") else reason  # drop its log prefix
                raise ConfigError(f"invalid response_format: the schema cannot be compiled: {reason[:300]}") from None
            self._compiled[key] = compiled
            if len(self._compiled) > CACHE:
                self._compiled.popitem(last=False)
        self.control_tokens()  # built here, on the caller's thread, not at admission on the engine's
        return compiled

    def control_tokens(self) -> torch.Tensor:
        """True for every token whose text holds a control character (and for ids past the
        tokenizer, which only pad the model's vocabulary); stop tokens stay allowed."""
        with self._lock:
            if self._control is None:
                bad = torch.ones(self.vocab_size, dtype=torch.bool)
                decode = self._tokenizer.decode
                for i in range(min(self.vocab_size, len(self._tokenizer))):
                    text = decode([i])
                    bad[i] = any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)
                bad[self._stop_ids] = False
                self._control = bad
            return self._control

    def matcher(self, constraint: Constraint) -> RowMatcher:
        return RowMatcher(self._xgr(), self.compile(constraint), self.vocab_size, self.control_tokens())


class RowMatcher:
    """One constrained row's grammar state (engine thread only)."""

    def __init__(self, xgr: Any, compiled: Any, vocab_size: int, control: torch.Tensor) -> None:
        self._xgr = xgr
        self._control = control
        self._matcher = xgr.GrammarMatcher(compiled)
        self._mask = xgr.allocate_token_bitmask(1, vocab_size)

    def masked(self, logits: torch.Tensor) -> torch.Tensor:
        """A copy of one row's logits (shape (V,)) with every forbidden token at -inf."""
        # The bitmask is built and applied on the CPU (no GPU kernels installed): a
        # constrained row on an accelerator costs one copy each way.
        out = logits.detach().float().cpu().clone().unsqueeze(0)
        self._matcher.fill_next_token_bitmask(self._mask)
        self._xgr.apply_token_bitmask_inplace(out, self._mask)
        out[0, self._control] = float("-inf")
        return out[0].to(logits.device)

    def accept(self, token: int) -> None:
        if not self._matcher.accept_token(token):
            # Only a token the mask allowed can be sampled: a refusal is a bug, not input.
            raise RuntimeError(f"grammar refused token {token} that its own mask allowed")
