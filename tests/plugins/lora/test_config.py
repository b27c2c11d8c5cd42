"""LoraConfig validation and target-module resolution."""

from __future__ import annotations

import pytest
from adapterhub.plugins.lora.config import LinearInfo, LoraConfig, pattern_matches, resolve_targets
from adapterhub.plugins.lora.validation import targets_for
from pydantic import ValidationError

from adapterhub.errors import ConfigError
from adapterhub.testing.models import tiny_llama


def test_defaults_and_scaling() -> None:
    cfg = LoraConfig()
    assert (cfg.r, cfg.alpha, cfg.dropout, cfg.target_modules, cfg.init) == (8, 16.0, 0.0, None, "kaiming")
    assert LoraConfig(r=16, alpha=8).scaling == 0.5


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"r": 0}, "r"),
        ({"r": -3}, "r"),
        ({"alpha": 0}, "alpha"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"target_modules": []}, "target_modules"),
        ({"target_modules": ["q_proj", ""]}, "target_modules"),
        ({"init": "orthogonal"}, "init"),
        ({"rank": 8}, "rank"),  # unknown keys are refused, not ignored
    ],
)
def test_invalid_fields_name_the_field(fields: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        LoraConfig.model_validate(fields)
    assert needle in str(info.value)


def test_config_is_frozen() -> None:
    cfg = LoraConfig()
    with pytest.raises(ValidationError):
        cfg.r = 4  # type: ignore[misc]


def test_comma_string_targets_and_json_round_trip() -> None:
    cfg = LoraConfig.model_validate({"target_modules": "q_proj, v_proj"})
    assert cfg.target_modules == ("q_proj", "v_proj")
    assert LoraConfig.model_validate(cfg.model_dump(mode="json")) == cfg
    assert LoraConfig(target_modules="all-linear").target_modules == "all-linear"


def test_pattern_semantics() -> None:
    path = "model.layers.12.self_attn.q_proj"
    assert pattern_matches("q_proj", path)
    assert pattern_matches("self_attn.q_proj", path)
    assert pattern_matches(path, path)
    assert pattern_matches("model.layers.1?.self_attn.*", path)
    assert not pattern_matches("proj", path)  # suffix matches whole components only
    assert not pattern_matches("model.layers.2*.self_attn.q_proj", path)


def _paths(cfg: LoraConfig) -> list[str]:
    model, _ = tiny_llama()
    return [t.path for t in targets_for(model, cfg)]


def test_llama_default_is_q_and_v() -> None:
    assert _paths(LoraConfig()) == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.v_proj",
        "model.layers.1.self_attn.q_proj",
        "model.layers.1.self_attn.v_proj",
    ]


def test_all_linear_excludes_lm_head() -> None:
    paths = _paths(LoraConfig(target_modules="all-linear"))
    assert len(paths) == 14 and "lm_head" not in paths


def test_unknown_architecture_defaults_to_all_linear_but_head() -> None:
    linears = [LinearInfo("enc.fc1", 4, 8), LinearInfo("enc.fc2", 8, 4), LinearInfo("lm_head", 4, 10)]
    got = resolve_targets(LoraConfig(), linears, "my-new-arch", {"lm_head"})
    assert [t.path for t in got] == ["enc.fc1", "enc.fc2"]


def test_pattern_matching_nothing_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'q_prj' matches no nn.Linear"):
        _paths(LoraConfig(target_modules=("q_proj", "q_prj")))


def test_glob_selects_a_layer_range() -> None:
    assert _paths(LoraConfig(target_modules=("model.layers.1.mlp.*",))) == [
        "model.layers.1.mlp.gate_proj",
        "model.layers.1.mlp.up_proj",
        "model.layers.1.mlp.down_proj",
    ]


def test_layers_restricts_targets_with_the_shared_selector_syntax() -> None:
    cfg = LoraConfig.model_validate({"layers": "1-1", "target_modules": "all-linear"})
    assert cfg.layers == "1"
    paths = _paths(cfg)
    assert len(paths) == 7 and all(p.startswith("model.layers.1.") for p in paths)
    with pytest.raises(ValidationError, match="reversed range"):
        LoraConfig.model_validate({"layers": "5-2"})
    with pytest.raises(ConfigError, match="selects no linear layer .* in layers 7"):
        _paths(LoraConfig(layers="7"))
