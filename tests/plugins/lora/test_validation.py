"""Shared adapter checks: config coercion, linear discovery through wrappers."""

from __future__ import annotations

import pytest
import torch
from adapterhub.plugins.lora import LoraConfig, LoraMethod
from adapterhub.plugins.lora.config import expected_shapes
from adapterhub.plugins.lora.validation import coerce_config, linear_infos, targets_for

from adapterhub.errors import ConfigError
from adapterhub.testing.models import tiny_llama


def test_coerce_config() -> None:
    cfg = LoraConfig(r=3)
    assert coerce_config(cfg) is cfg
    assert coerce_config({"r": 3}) == cfg
    with pytest.raises(ConfigError, match="invalid lora config"):
        coerce_config({"r": 3, "rank": 3})
    with pytest.raises(ConfigError, match="needs a LoraConfig, got int"):
        coerce_config(3)


def test_linear_infos_see_through_training_and_serving_layers() -> None:
    model, _ = tiny_llama()
    before = linear_infos(model)
    adapter = LoraMethod().attach(model, LoraConfig(target_modules="all-linear"))
    assert linear_infos(model) == before
    adapter.detach()
    rt = LoraMethod().runtime(model)
    cfg = LoraConfig(r=2, target_modules="all-linear")
    tensors = {k: torch.zeros(v) for k, v in expected_shapes(cfg, targets_for(model, cfg)).items()}
    rt.apply(rt.plan("z", cfg, tensors))
    assert len(rt.wrapped) == 14
    assert linear_infos(model) == before
