"""The per-step math of the trainer: completion-only loss, token counts, lr schedule.

Split from :mod:`adapterhub.trainer.loop` so benchmarks and tests use exactly the
functions the loop uses.

Logits are computed only where the loss needs them (transformers' boolean
``logits_to_keep``): on SmolLM2 the 49 152-way output layer is a fifth of the model's
FLOPs, and a sentiment completion is 2 tokens of ~50. Models without that argument get
full logits and the same loss.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from adapterhub.trainer.data import IGNORE_INDEX as IGNORE
from adapterhub.trainer.data import TokenizedExample, collate


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak lr for (0-based) optimizer step ``step``."""
    if step < warmup:
        return (step + 1) / warmup  # never 0: the first step already learns
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _forward_kwargs(model: Any) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


class CompletionLoss:
    """Summed completion-token cross-entropy of one micro-batch (module docs)."""

    def __init__(self, model: Any, device: torch.device, *, autocast: bool | None = None) -> None:
        self.model = model
        self.device = device
        accepted = _forward_kwargs(model)
        self.sliced = "logits_to_keep" in accepted
        self.no_cache = "use_cache" in accepted
        # bf16 autocast on CUDA, fp32 on CPU by default; ``autocast=True`` on CPU runs the
        # same mixed-precision code path (how the tests cover it without a GPU).
        self.autocast = device.type == "cuda" if autocast is None else autocast

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device)
        labels = batch["labels"].to(self.device)
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if self.no_cache:
            kwargs["use_cache"] = False
        # keep[:, t] is True where token t+1 is a completion token: the only logits used.
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = labels[:, 1:] != IGNORE
        with self._autocast():
            if self.sliced:
                logits = self.model(**kwargs, logits_to_keep=keep).logits
                if logits.dim() == 2 and logits.shape[0] == int(keep.sum()):
                    targets = labels[:, 1:][keep[:, :-1]]
                    return F.cross_entropy(logits.float(), targets, reduction="sum")
                self.sliced = False  # an older/other model ignored the boolean mask
            logits = self.model(**kwargs).logits
        flat = logits[:, :-1].float().reshape(-1, logits.shape[-1])
        return F.cross_entropy(flat, labels[:, 1:].reshape(-1), ignore_index=IGNORE, reduction="sum")


def completion_tokens(batch: Sequence[TokenizedExample]) -> int:
    # The first token is never predicted, so a completion starting at 0 loses one.
    return sum(len(ex) - max(ex.prompt_len, 1) for ex in batch)


@torch.no_grad()
def eval_loss(loss_fn: CompletionLoss, examples: Sequence[TokenizedExample], batch_size: int, pad_id: int) -> float:
    """Token-mean completion loss over ``examples`` (length-sorted batches, no dropout)."""
    model = loss_fn.model
    was_training = model.training
    model.eval()
    try:
        order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            batch = [examples[i] for i in order[start : start + batch_size]]
            total += float(loss_fn(collate(batch, pad_id)))
            count += completion_tokens(batch)
        return total / max(count, 1)
    finally:
        model.train(was_training)
