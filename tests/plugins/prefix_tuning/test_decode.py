"""The generic greedy decoder agrees with transformers' generate and stops at EOS."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from adapterhub.plugins.prefix_tuning.decode import greedy_decode


def test_matches_transformers_generate_on_left_padded_batch(model: Any, h: Any) -> None:
    gen = torch.Generator().manual_seed(0)
    ids, mask = h.left_pad([torch.randint(0, 256, (n,), generator=gen) for n in (3, 8, 5)])
    with torch.no_grad():
        ref = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=7, do_sample=False,
                             eos_token_id=None, pad_token_id=258)[:, ids.shape[1]:]
    ours = greedy_decode(model, {"input_ids": ids, "attention_mask": mask}, 7)
    assert ours.tokens == ref.tolist()
    assert ours.prefill_logits.shape == (3, 8, model.config.vocab_size)


def test_stops_each_row_at_its_first_eos(model: Any, h: Any) -> None:
    gen = torch.Generator().manual_seed(1)
    ids, mask = h.left_pad([torch.randint(0, 256, (n,), generator=gen) for n in (4, 6)])
    free = greedy_decode(model, {"input_ids": ids, "attention_mask": mask}, 6).tokens
    eos = free[0][2]  # a token row 0 emits by step 3
    stopped = greedy_decode(model, {"input_ids": ids, "attention_mask": mask}, 6, eos_token_id=[eos]).tokens
    for row_free, row_stopped in zip(free, stopped, strict=True):
        cut = row_free.index(eos) + 1 if eos in row_free else len(row_free)
        assert row_stopped == row_free[:cut]
    assert len(stopped[0]) <= 3 < len(free[0])


def test_rejects_zero_new_tokens(model: Any) -> None:
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_decode(model, {"input_ids": torch.zeros(1, 2, dtype=torch.long)}, 0)
