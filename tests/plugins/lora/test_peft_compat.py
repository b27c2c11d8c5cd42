"""Our LoRA math equals peft's: the same A/B in a peft LoraModel give the same logits.

This is what the registry's PEFT export/import relies on: ``<path>.lora_A`` (r, in) and
``<path>.lora_B`` (out, r) map one-to-one onto peft's ``lora_A``/``lora_B`` weights, with
the same ``alpha / r`` scale.
"""

from __future__ import annotations

import copy

import pytest
import torch
from adapterhub.plugins.lora import LoraConfig, LoraMethod
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model

from adapterhub.testing.models import tiny_llama


@pytest.mark.parametrize(
    ("targets", "r", "alpha"),
    [(("q_proj", "v_proj"), 4, 8.0), ("all-linear", 8, 32.0)],
)
def test_same_weights_in_peft_give_the_same_logits(targets: tuple[str, ...] | str, r: int, alpha: float) -> None:
    model, _ = tiny_llama()
    twin = copy.deepcopy(model)
    cfg = LoraConfig(r=r, alpha=alpha, target_modules=targets)
    adapter = LoraMethod().attach(model, cfg)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in adapter.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    state = adapter.adapter_state()

    peft_targets = list(targets) if isinstance(targets, tuple) else "all-linear"
    pmodel = get_peft_model(twin, PeftLoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=peft_targets))
    loaded = 0
    with torch.no_grad():
        for path in adapter.targets:
            layer = pmodel.base_model.model.get_submodule(path)
            layer.lora_A["default"].weight.copy_(state[f"{path}.lora_A"])
            layer.lora_B["default"].weight.copy_(state[f"{path}.lora_B"])
            loaded += 1
    # peft must adapt exactly the same modules (no more, no fewer).
    peft_paths = {n.removeprefix("base_model.model.") for n, m in pmodel.named_modules() if hasattr(m, "lora_A") and isinstance(m.lora_A, torch.nn.ModuleDict)}
    assert peft_paths == set(adapter.targets) and loaded == len(adapter.targets)

    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(9))
    model.eval()
    pmodel.eval()
    with torch.no_grad():
        ours = model(input_ids=ids).logits
        theirs = pmodel(input_ids=ids).logits
    assert (ours - theirs).abs().max().item() <= 1e-5
    with pmodel.disable_adapter(), torch.no_grad():
        assert (pmodel(input_ids=ids).logits - ours).abs().max().item() > 1e-3  # the adapter matters
