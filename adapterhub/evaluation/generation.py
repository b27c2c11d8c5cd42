"""Batched greedy generation for evaluation.

The harness only needs a :class:`Generator`: ``generator(prompts, max_new_tokens) ->
completions``. Two implementations:

* :class:`ModelGenerator` — a plain transformers model (the base, or a model with a
  non-hot-swappable adapter such as a full fine-tune loaded into it): ``model.generate``,
  greedy, batched, left padding.
* :class:`HostGenerator` — an adapter served by :class:`adapterhub.host.AdapterHost`,
  the same hot-swap path users serve with.

Both format prompts through :func:`adapterhub.prompting.format_few_shot` (with no shots,
exactly :func:`adapterhub.trainer.templates.format_prompt`, the function the trainer
uses) with the adapter's own template (recorded in its manifest), so a model is asked
exactly what it was trained on; few-shot examples become prior turns of that template.
Each can ``render`` one prompt and ``count_tokens`` of the result (the harness fits
few-shot prompts into the context window with them). Each exposes ``settings`` (what changes
its outputs; part of the base-output cache key) and ``batch_size`` (the harness feeds
it prompts in chunks of that size so it can show a progress bar).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from adapterhub.errors import ConfigError, EvaluationError
from adapterhub.protocols.evaluator import EvaluatorContext


@runtime_checkable
class Generator(Protocol):
    """Greedy completions for prompts (raw task prompts; the generator formats them)."""

    def __call__(self, prompts: list[str], max_new_tokens: int) -> list[str]: ...


# The built-in generators also take ``shots=`` (per prompt, its solved examples) in
# ``__call__`` and ``context``; the protocol stays the two-argument call so that any
# plain callable can be evaluated zero-shot.


Shots = Sequence[Sequence[tuple[str, str]]]
"""Per prompt, its solved (prompt, completion) examples for few-shot evaluation."""


def format_prompts(
    tokenizer: Any, prompts: Sequence[str], template: str | None, shots: Shots | None = None
) -> list[str]:
    """The trainer's prompt formatting (chat template as a user turn, or its fallbacks);
    with ``shots``, each prompt's examples as prior turns (:mod:`adapterhub.prompting`)."""
    from adapterhub.prompting import format_few_shot

    if shots is None:
        shots = [()] * len(prompts)
    if len(shots) != len(prompts):
        raise EvaluationError(f"{len(shots)} shot lists for {len(prompts)} prompts")
    return [format_few_shot(tokenizer, p, s, template) for p, s in zip(prompts, shots, strict=True)]


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens of an already formatted prompt (its special tokens are in the text)."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a completion: tokenizer EOS, generation-config EOS, ChatML end."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    cfg_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(cfg_eos, int):
        ids.add(cfg_eos)
    elif isinstance(cfg_eos, list):
        ids.update(int(x) for x in cfg_eos)
    tid = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(tid, int) and tid >= 0 and tid != tokenizer.unk_token_id:
        ids.add(tid)
    return sorted(ids)


def _dtype_name(model: Any) -> str:
    try:
        return str(next(model.parameters()).dtype).replace("torch.", "")
    except (StopIteration, AttributeError):
        return "unknown"


class ModelGenerator:
    """Greedy batched ``model.generate`` with left padding (see module docs)."""

    engine = "hf-generate"

    def __init__(self, model: Any, tokenizer: Any, *, template: str | None = None, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.batch_size = batch_size
        self._eos = eos_token_ids(model, tokenizer)
        self._pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self._eos[0]

    @property
    def settings(self) -> dict[str, Any]:
        from adapterhub.trainer.templates import resolve_template

        return {
            "engine": self.engine,
            "decoding": "greedy",
            "template": resolve_template(self.tokenizer, self.template),
            "batch_size": self.batch_size,
            "dtype": _dtype_name(self.model),
        }

    def formatted(self, prompts: Sequence[str], shots: Shots | None = None) -> list[str]:
        return format_prompts(self.tokenizer, prompts, self.template, shots)

    def render(self, prompt: str, shots: Sequence[tuple[str, str]] = ()) -> str:
        return self.formatted([prompt], [shots])[0]

    def count_tokens(self, text: str) -> int:
        return count_tokens(self.tokenizer, text)

    def context(self, prompts: Sequence[str], shots: Shots | None = None) -> EvaluatorContext:
        """What a model-aware evaluator (perplexity) gets: this model, formatted prompts."""
        return EvaluatorContext(model=self.model, tokenizer=self.tokenizer, prompts=self.formatted(prompts, shots))

    def __call__(self, prompts: list[str], max_new_tokens: int, shots: Shots | None = None) -> list[str]:
        from transformers import GenerationConfig

        texts = self.formatted(prompts, shots)
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self._pad,
            eos_token_id=self._eos,
        )
        device = next(self.model.parameters()).device
        tok = self.tokenizer
        side = tok.padding_side
        tok.padding_side = "left"  # generation continues from the right edge of every row
        was_training = self.model.training
        self.model.eval()
        out: list[str] = []
        try:
            for start in range(0, len(texts), self.batch_size):
                enc = tok(texts[start : start + self.batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
                ids = enc["input_ids"].to(device)
                with torch.no_grad():
                    gen = self.model.generate(
                        input_ids=ids, attention_mask=enc["attention_mask"].to(device), generation_config=config
                    )
                for row in gen[:, ids.shape[1] :].tolist():
                    out.append(tok.decode(_until_eos(row, self._eos), skip_special_tokens=True))
        finally:
            tok.padding_side = side
            self.model.train(was_training)
        return out


def _until_eos(ids: list[int], eos: Sequence[int]) -> list[int]:
    stop = set(eos)
    for i, t in enumerate(ids):
        if t in stop:
            return ids[:i]
    return ids


class HostGenerator:
    """Greedy completions of one adapter (or the bare base: ``adapter=None``) on a host."""

    engine = "adapterhub-host"

    def __init__(
        self,
        host: Any,
        adapter: str | None,
        *,
        template: str | None = None,
        batch_size: int = 8,
        context_factory: Callable[[Sequence[str]], EvaluatorContext] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.host = host
        self.adapter = adapter
        self.template = template
        self.batch_size = batch_size
        self._context_factory = context_factory

    def context(self, prompts: Sequence[str], shots: Shots | None = None) -> EvaluatorContext:
        """Model-aware evaluators need a plain module with the adapter applied."""
        if self._context_factory is None:
            raise EvaluationError("this host generator has no model context (perplexity needs one)")
        return self._context_factory(self.formatted(prompts, shots))

    @property
    def settings(self) -> dict[str, Any]:
        from adapterhub.trainer.templates import resolve_template

        return {
            "engine": self.engine,
            "decoding": "greedy",
            "template": resolve_template(self.host.tokenizer, self.template),
            "batch_size": self.batch_size,
            "dtype": _dtype_name(self.host.model),
        }

    def formatted(self, prompts: Sequence[str], shots: Shots | None = None) -> list[str]:
        return format_prompts(self.host.tokenizer, prompts, self.template, shots)

    def render(self, prompt: str, shots: Sequence[tuple[str, str]] = ()) -> str:
        return self.formatted([prompt], [shots])[0]

    def count_tokens(self, text: str) -> int:
        return count_tokens(self.host.tokenizer, text)

    def __call__(self, prompts: list[str], max_new_tokens: int, shots: Shots | None = None) -> list[str]:
        from adapterhub.refs import BASE

        # Formatted here with the adapter's template, handed over raw: the host's own
        # default formatting knows nothing of per-adapter templates.
        gens = self.host.generate(
            self.formatted(prompts, shots),
            adapters=self.adapter if self.adapter is not None else BASE,
            max_new_tokens=max_new_tokens,
            batch_size=self.batch_size,
            raw=True,
        )
        return [g.completion for g in gens]
