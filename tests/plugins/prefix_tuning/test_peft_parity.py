"""Our prefix equals peft's PrefixTuning with the same weights (fixes the PEFT mapping)."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
from adapterhub.plugins.prefix_tuning import PrefixTuningConfig, PrefixTuningMethod
from adapterhub.plugins.prefix_tuning.layout import (
    from_peft_prompt_embeddings,
    geometry_of,
    to_peft_prompt_embeddings,
)
from peft import PrefixTuningConfig as PeftPrefixConfig
from peft import get_peft_model


def peft_model(base: Any, tokens: int) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(copy.deepcopy(base), PeftPrefixConfig(task_type="CAUSAL_LM", num_virtual_tokens=tokens)).eval()


@pytest.mark.parametrize("shape", ["tiny", "smollm"])
def test_same_logits_as_peft(method: PrefixTuningMethod, h: Any, shape: str) -> None:
    base = h.make_model() if shape == "tiny" else h.smollm_shaped()
    tokens = 5
    tensors = h.random_prefix(base, tokens, seed=11)
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 256, (3, 9), generator=gen)
    mask = torch.ones_like(ids)

    pm = peft_model(base, tokens)
    encoder = pm.prompt_encoder["default"]
    with torch.no_grad():
        encoder.embedding.weight.copy_(to_peft_prompt_embeddings(tensors["prefix.key"], tensors["prefix.value"]))
    # what peft would save is exactly our mapping of the same tensors
    saved = pm.get_prompt_embedding_to_save("default")
    assert torch.equal(from_peft_prompt_embeddings(saved, geometry_of(base))["prefix.key"], tensors["prefix.key"])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        theirs = pm(input_ids=ids, attention_mask=mask).logits

    ours_model = copy.deepcopy(base)
    method.load(ours_model, PrefixTuningConfig(num_virtual_tokens=tokens), tensors)
    with torch.no_grad():
        ours = ours_model(input_ids=ids, attention_mask=mask).logits
        plain = base(input_ids=ids, attention_mask=mask).logits
    assert (ours - theirs).abs().max() <= 1e-5
    assert (ours - plain).abs().max() > 1e-3  # the prefix matters, so the match is meaningful
