"""The reusable selector: layer ranges, name patterns, parameter kinds, errors."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from adapterhub.errors import ConfigError
from adapterhub.selector import (
    SelectorConfig,
    format_layers,
    layer_index,
    num_layers,
    parameter_aliases,
    parse_layers,
    select_modules,
    select_parameters,
)


@pytest.fixture(scope="module")
def llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=300, tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg)


@pytest.fixture(scope="module")
def gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=3, n_embd=32, n_head=2, vocab_size=100, n_positions=32, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg)


# --- layer specs ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "expected"),
    [("20-29", tuple(range(20, 30))), ("0,3,5-7", (0, 3, 5, 6, 7)), ("5", (5,)), (2, (2,)),
     ([3, 1, 1], (1, 3)), (" 1 - 2 , 4 ", (1, 2, 4)), ("3-3", (3,))],
)
def test_parse_layers(spec: object, expected: tuple[int, ...]) -> None:
    assert parse_layers(spec) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "needle"),
    [("-1", "negative"), ("3--1", "negative"), ("7-5", "reversed"), ("a-b", "cannot parse"),
     ("1,,2", "cannot parse"), ("", "cannot parse"), ([1, "x"], "integers"), (True, "expected")],
)
def test_parse_layers_errors(spec: object, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_layers(spec)  # type: ignore[arg-type]


def test_format_layers_is_canonical() -> None:
    assert format_layers([7, 0, 5, 6, 3]) == "0,3,5-7"
    assert SelectorConfig(layers="5-7,0,3,6").layers == "0,3,5-7"
    assert SelectorConfig(layers=[1, 2]).layers == "1-2"  # type: ignore[arg-type]


def test_layer_index_detection() -> None:
    assert layer_index("model.layers.12.self_attn.q_proj.weight") == 12
    assert layer_index("transformer.h.3.mlp.c_fc.bias") == 3
    assert layer_index("layers.0.norm.weight") == 0
    assert layer_index("encoder.layer.7.attention.self.query.weight") == 7
    assert layer_index("model.embed_tokens.weight") is None
    assert layer_index("mh.12.weight") is None  # "h" must be a whole component


def test_num_layers(llama: LlamaForCausalLM, gpt2: GPT2LMHeadModel) -> None:
    assert num_layers(llama) == 4
    assert num_layers(gpt2) == 3


# --- config validation ------------------------------------------------------------------------
def test_config_is_frozen_and_strict() -> None:
    cfg = SelectorConfig(kinds="bias,norm", modules="q_proj,v_proj")  # type: ignore[arg-type]
    assert cfg.kinds == ("bias", "norm")
    assert cfg.modules == ("q_proj", "v_proj")
    assert SelectorConfig(modules="re:q_proj|v_proj").modules == ("re:q_proj|v_proj",)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        cfg.layers = "1"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        SelectorConfig(layer="1")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"layers": "-2"}, "negative"), ({"kinds": ["bias", "weights"]}, "unknown kind 'weights'"),
     ({"kinds": []}, "empty"), ({"modules": "re:("}, "bad regular expression"), ({"modules": "a,,b"}, "empty pattern")],
)
def test_config_errors_name_the_problem(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        SelectorConfig(**kwargs)  # type: ignore[arg-type]


# --- selection -----------------------------------------------------------------------------------
def test_no_filter_selects_everything_once(llama: LlamaForCausalLM) -> None:
    names = select_parameters(llama, SelectorConfig())
    assert names == [n for n, _ in llama.named_parameters()]
    assert "lm_head.weight" not in names  # tied: one tensor, canonical name only


def test_layer_range(llama: LlamaForCausalLM) -> None:
    names = select_parameters(llama, SelectorConfig(layers="1-2"))
    assert names and {layer_index(n) for n in names} == {1, 2}
    assert len(names) == 2 * 9  # 7 linears + 2 norms per Llama layer
    assert not any("embed" in n or n == "model.norm.weight" for n in names)


def test_layer_out_of_range_is_config_error(llama: LlamaForCausalLM) -> None:
    with pytest.raises(ConfigError, match=r"index 4 is out of range; the model has 4 layers \(0-3\)"):
        select_parameters(llama, SelectorConfig(layers="2-4"))
    with pytest.raises(ConfigError, match="out of range"):
        select_modules(llama, SelectorConfig(layers="9"))


def test_glob_patterns_match_suffixes(llama: LlamaForCausalLM) -> None:
    names = select_parameters(llama, SelectorConfig(modules=("q_proj", "v_proj")))
    assert len(names) == 8 and all(n.endswith(("q_proj.weight", "v_proj.weight")) for n in names)
    mlp = select_parameters(llama, SelectorConfig(modules=("mlp.*",)))
    assert len(mlp) == 12 and all(".mlp." in n for n in mlp)
    assert select_parameters(llama, SelectorConfig(modules=("*_proj",))) == [
        n for n, _ in llama.named_parameters() if "_proj" in n
    ]


def test_regex_patterns(llama: LlamaForCausalLM) -> None:
    names = select_parameters(llama, SelectorConfig(modules=(r"re:layers\.[02]\.self_attn\.(k|o)_proj$",)))
    assert names == [
        "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.o_proj.weight",
        "model.layers.2.self_attn.k_proj.weight", "model.layers.2.self_attn.o_proj.weight",
    ]


def test_kinds_on_llama(llama: LlamaForCausalLM) -> None:
    norms = select_parameters(llama, SelectorConfig(kinds=("norm",)))
    assert norms == [n for n, _ in llama.named_parameters() if "norm" in n]
    attn = select_parameters(llama, SelectorConfig(kinds=("attention",)))
    assert len(attn) == 16 and all("self_attn" in n for n in attn)  # not post_attention_layernorm
    mlp = select_parameters(llama, SelectorConfig(kinds=("mlp",)))
    assert len(mlp) == 12 and all(".mlp." in n for n in mlp)
    assert select_parameters(llama, SelectorConfig(kinds=("embedding",))) == ["model.embed_tokens.weight"]
    # lm_head is tied to the embedding: the shared tensor, under its canonical name
    assert select_parameters(llama, SelectorConfig(kinds=("lm_head",))) == ["model.embed_tokens.weight"]
    assert select_modules(llama, SelectorConfig(kinds=("lm_head",))) == ["lm_head"]
    union = select_parameters(llama, SelectorConfig(kinds=("norm", "embedding")))
    assert set(union) == set(norms) | {"model.embed_tokens.weight"}
    with pytest.raises(ConfigError, match="matched no parameters"):
        select_parameters(llama, SelectorConfig(kinds=("bias",)))  # Llama has no biases


def test_kinds_on_gpt2(gpt2: GPT2LMHeadModel) -> None:
    biases = select_parameters(gpt2, SelectorConfig(kinds=("bias",)))
    assert biases == [n for n, _ in gpt2.named_parameters() if n.endswith(".bias")]
    norms = select_parameters(gpt2, SelectorConfig(kinds=("norm",)))
    assert norms == [n for n, _ in gpt2.named_parameters() if ".ln_" in n]
    emb = select_parameters(gpt2, SelectorConfig(kinds=("embedding",)))
    assert emb == ["transformer.wte.weight", "transformer.wpe.weight"]
    both = select_parameters(gpt2, SelectorConfig(layers="2", kinds=("bias",), modules=("mlp.*",)))
    assert both == ["transformer.h.2.mlp.c_fc.bias", "transformer.h.2.mlp.c_proj.bias"]


def test_filters_combine_with_and(llama: LlamaForCausalLM) -> None:
    names = select_parameters(llama, SelectorConfig(layers="3", kinds=("attention",), modules=("q_proj",)))
    assert names == ["model.layers.3.self_attn.q_proj.weight"]
    with pytest.raises(ConfigError, match=r"matched no parameters \(layers=0 modules=nothing_here kinds=all\)"):
        select_parameters(llama, SelectorConfig(layers="0", modules=("nothing_here",)))


def test_select_modules_with_types(llama: LlamaForCausalLM) -> None:
    mods = select_modules(llama, SelectorConfig(layers="0", kinds=("attention", "mlp")), types=(torch.nn.Linear,))
    assert mods == [f"model.layers.0.self_attn.{p}_proj" for p in "qkvo"] + [
        f"model.layers.0.mlp.{p}_proj" for p in ("gate", "up", "down")
    ]
    with pytest.raises(ConfigError, match="no modules of type Linear"):
        select_modules(llama, SelectorConfig(kinds=("norm",)), types=(torch.nn.Linear,))


def test_parameter_aliases_show_ties(llama: LlamaForCausalLM) -> None:
    aliases = parameter_aliases(llama)
    assert aliases["model.embed_tokens.weight"] == ["model.embed_tokens.weight", "lm_head.weight"]
    assert all(len(v) == 1 for k, v in aliases.items() if k != "model.embed_tokens.weight")
