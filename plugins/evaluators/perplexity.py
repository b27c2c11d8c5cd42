"""``perplexity``: how likely the references are under the model, given their prompts.

Model-aware (``needs_model=True``): the harness passes an :class:`EvaluatorContext`
with the (possibly adapted) model, its tokenizer and the prompts, already formatted
exactly as for generation. Only reference tokens are scored: the prompt is context
(labels masked), so a model that has forgotten how to continue general text shows a
higher number even when its task outputs look fine. Predictions are ignored; with
several references the first one is scored.

Corpus perplexity is token-weighted: ``exp(sum of token NLLs / number of tokens)``,
the loss-based measure peft's method comparison uses, not a mean of per-example
perplexities (which short texts would dominate).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from adapterhub.errors import DataError, EvaluationError
from adapterhub.protocols.evaluator import EvaluatorContext

from ._common import EvaluatorOptions
from .base import ExampleEvaluator, Row, weighted_mean


@dataclasses.dataclass(frozen=True)
class PerplexityOptions(EvaluatorOptions):
    batch_size: int = 4
    max_length: int | None = None
    """Token cap per example (default: the model's ``max_position_embeddings``). The
    prompt is cut from the left first, then the reference from the right."""
    per_example: bool = False


def _encode(tokenizer: Any, prompt: str, reference: str, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt+reference and how many leading ids are (unscored) prompt."""
    if prompt:
        # A chat-templated prompt already carries its special tokens; adding BOS again
        # would shift every position.
        bos = getattr(tokenizer, "bos_token", None)
        add = not (bos and prompt.startswith(bos))
        p_ids = list(tokenizer(prompt, add_special_tokens=add)["input_ids"])
    else:
        # Plain text: start from BOS when the tokenizer has one so the first word is scored.
        bos_id = getattr(tokenizer, "bos_token_id", None)
        p_ids = [bos_id] if bos_id is not None else []
    r_ids = list(tokenizer(reference, add_special_tokens=False)["input_ids"])
    if len(r_ids) > max_length - 1:
        r_ids = r_ids[: max_length - 1]
    keep = max_length - len(r_ids)
    if len(p_ids) > keep:
        p_ids = p_ids[len(p_ids) - keep :]
    return p_ids + r_ids, len(p_ids)


class PerplexityEvaluator(ExampleEvaluator):
    """Fits the shared loop with two overrides: the model runs over *batches* of
    examples (``score_rows``), and the corpus number is a token-weighted mean of the
    rows' NLL, not a plain mean of per-example perplexities (``aggregate``)."""

    name = "perplexity"
    description = "token-weighted perplexity of the references given the prompts (needs the model)"
    needs_model = True
    options_type = PerplexityOptions
    lower_is_better = frozenset({"perplexity"})

    def score_rows(
        self,
        predictions: Sequence[str],
        references: Sequence[Sequence[str]],
        options: Any,
        context: EvaluatorContext | None,
    ) -> list[Row]:
        opts: PerplexityOptions = options
        refs = references
        if context is None or context.model is None or context.tokenizer is None:
            raise EvaluationError("evaluator 'perplexity' needs the model: pass an EvaluatorContext with model and tokenizer")
        prompts = list(context.prompts) or [""] * len(refs)
        if len(prompts) != len(refs):
            raise DataError(f"evaluator 'perplexity': {len(prompts)} prompts for {len(refs)} examples")
        import torch

        model, tok = context.model, context.tokenizer
        cap = opts.max_length or int(getattr(model.config, "max_position_embeddings", 2048))
        encoded = [_encode(tok, p, r[0], cap) for p, r in zip(prompts, refs, strict=True)]
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        device = next(model.parameters()).device
        nll = [0.0] * len(encoded)
        count = [0] * len(encoded)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(encoded), opts.batch_size):
                    batch = encoded[start : start + opts.batch_size]
                    width = max(len(ids) for ids, _ in batch)
                    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                    mask = torch.zeros((len(batch), width), dtype=torch.long)
                    labels = torch.full((len(batch), width), -100, dtype=torch.long)
                    for row, (seq, n_prompt) in enumerate(batch):
                        ids[row, : len(seq)] = torch.tensor(seq)
                        mask[row, : len(seq)] = 1
                        labels[row, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:], dtype=torch.long)
                    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
                    # Position t predicts token t+1 (the shift HF applies inside its loss).
                    target = labels[:, 1:].to(device)
                    losses = torch.nn.functional.cross_entropy(
                        logits[:, :-1].transpose(1, 2), target, ignore_index=-100, reduction="none"
                    )
                    valid = target != -100
                    for row in range(len(batch)):
                        nll[start + row] = float(losses[row][valid[row]].double().sum())
                        count[start + row] = int(valid[row].sum())
        finally:
            model.train(was_training)
        return [{"nll": n, "tokens": c} for n, c in zip(nll, count, strict=True)]

    def aggregate(
        self, rows: Sequence[Row], predictions: Sequence[str], references: Sequence[Sequence[str]], options: Any
    ) -> dict[str, Any]:
        total = sum(int(r["tokens"]) for r in rows)
        if total == 0:
            raise DataError("evaluator 'perplexity': the references contain no tokens to score")
        mean_nll = weighted_mean([float(r["nll"]) for r in rows], [float(r["tokens"]) for r in rows])
        return {"perplexity": math.exp(mean_nll), "nll": mean_nll, "tokens": total}

    def headline(self, corpus: Mapping[str, Any], options: Any) -> dict[str, float]:
        return {"perplexity": corpus["perplexity"]}  # lower is better; not on 0-100

    def statistics(
        self, rows: Sequence[Row], predictions: Sequence[str], references: Sequence[Sequence[str]], options: Any
    ) -> dict[str, Any]:
        import numpy as np

        from adapterhub.evaluation.intervals import Statistic

        def pooled(summed: Any) -> Any:  # token-weighted, as aggregate(): exp(Σ nll / Σ tokens)
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.exp(summed[:, 0] / summed[:, 1])

        return {"perplexity": Statistic.of("corpus", [[float(r["nll"]), float(r["tokens"])] for r in rows], pooled)}

    def example_detail(self, rows: Sequence[Row], options: Any) -> list[dict[str, Any]]:
        return [
            {"perplexity": math.exp(r["nll"] / r["tokens"]) if r["tokens"] else float("nan"), "tokens": r["tokens"]}
            for r in rows
        ]
