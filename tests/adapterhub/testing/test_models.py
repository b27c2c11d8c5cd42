"""The tiny seeded Llama and its offline byte-level tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch

from adapterhub.fingerprint import fingerprint
from adapterhub.testing.models import (
    CHAT_TEMPLATE,
    IM_END_ID,
    PAD_ID,
    VOCAB_SIZE,
    tiny_llama,
    tiny_llama_dir,
)

GOLDEN_SHA256 = "c0ba62f1183a619170c9e3b5d50b104593b5b35327887348a9d3fcfebc9bd8c0"


def test_shape_gqa_and_tied_embeddings() -> None:
    model, tok = tiny_llama()
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size) == (64, 2, 4, 2, 128)
    assert model.model.layers[0].self_attn.k_proj.weight.shape == (32, 64)  # 2 kv heads x 16
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert cfg.vocab_size == VOCAB_SIZE == len(tok)


def test_seeded_and_identical_every_time() -> None:
    a, _ = tiny_llama(seed=0)
    b, _ = tiny_llama(seed=0)
    c, _ = tiny_llama(seed=1)
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(p, q), n
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)
    # A golden hash pins identity across machines (torch's CPU generator is portable);
    # if this changes, bump TINY_VERSION so cached copies and fingerprints are rebuilt.
    assert fingerprint(a, "t").weights_sha256 == GOLDEN_SHA256


def test_byte_tokenizer_round_trips_any_text() -> None:
    _, tok = tiny_llama()
    for text in ["hello", "héllo wörld 你好 🤖", "tabs\tand\nnewlines  ", "\x00\x01"]:
        ids = tok(text)["input_ids"]
        assert all(0 <= i < 256 for i in ids) and len(ids) == len(text.encode("utf-8"))
        assert tok.decode(ids) == text
    assert tok("<|im_start|>")["input_ids"] == [256]
    assert tok.eos_token_id == IM_END_ID and tok.pad_token_id == PAD_ID and tok.padding_side == "left"


def test_chat_template_and_generation() -> None:
    model, tok = tiny_llama()
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    batch = tok(["a", "abcd"], return_tensors="pt", padding=True)
    assert batch["input_ids"][0, 0].item() == PAD_ID and batch["attention_mask"][0, 0].item() == 0
    out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert out.shape == (2, 8)


def test_dir_round_trip(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = tiny_llama_dir(tmp_path / "t", seed=4)
    ref, _ = tiny_llama(seed=4)
    loaded = AutoModelForCausalLM.from_pretrained(d)
    tok = AutoTokenizer.from_pretrained(d)
    for k, v in ref.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert tok.decode(tok("ünïcode")["input_ids"]) == "ünïcode"
    assert tok.chat_template == CHAT_TEMPLATE
