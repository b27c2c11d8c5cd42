"""A tiny, seeded, randomly initialised Llama-style model with an offline tokenizer.

``tiny_llama(seed=0)`` returns ``(model, tokenizer)``: a ``LlamaForCausalLM`` with
grouped-query attention (hidden 64, 2 layers, 4 heads, 2 key/value heads, intermediate
128, tied embeddings like SmolLM2) and a byte-level tokenizer built in memory with the
``tokenizers`` library (256 byte tokens + ``<|im_start|>``, ``<|im_end|>``, ``<pad>``, no
merges, a ChatML chat template). Nothing touches the network and the weights are
identical on every machine: they are filled tensor by tensor, in sorted name order, from
one seeded ``torch.Generator`` instead of relying on transformers' init order.

It is the ``tiny-random-llama`` base-model alias and the model every unit test uses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

TINY_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
}
SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<pad>")
VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
IM_START_ID, IM_END_ID, PAD_ID = 256, 257, 258
INIT_STD = 0.02

# ChatML like SmolLM2-Instruct's template, minus its default system prompt (a tiny random
# model gains nothing from 30 tokens of "You are a helpful AI assistant").
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def byte_tokenizer() -> Any:
    """A byte-level tokenizer (every string encodes losslessly) with ChatML specials."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # Byte-level BPE with an alphabet of the 256 byte symbols and no merges: one token
    # per UTF-8 byte, ids 0..255 in byte order.
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    byte_to_char = _bytes_to_unicode()
    vocab = {byte_to_char[b]: b for b in range(256)}
    assert set(vocab) == set(alphabet)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIAL_TOKENS])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token=None,
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        model_max_length=TINY_CONFIG["max_position_embeddings"],
    )
    return hf


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable unicode map (what the ByteLevel pre-tokenizer emits)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def tiny_config(**overrides: Any) -> Any:
    from transformers import LlamaConfig

    fields = {**TINY_CONFIG, **overrides}
    fields.setdefault("vocab_size", VOCAB_SIZE)
    fields.setdefault("bos_token_id", None)
    fields.setdefault("eos_token_id", IM_END_ID)
    fields.setdefault("pad_token_id", PAD_ID)
    config = LlamaConfig(**fields)
    config.architectures = ["LlamaForCausalLM"]
    return config


@torch.no_grad()
def _seeded_init(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for name, param in sorted(model.named_parameters()):
        if name.endswith("norm.weight"):
            param.fill_(1.0)
        elif name.endswith(".bias"):
            param.zero_()
        else:
            # Draw in float32 then cast, so every dtype sees the same underlying values.
            values = torch.randn(param.shape, generator=gen, dtype=torch.float32) * INIT_STD
            param.copy_(values.to(param.dtype))


def tiny_llama(seed: int = 0, dtype: torch.dtype = torch.float32, **overrides: Any) -> tuple[Any, Any]:
    """(model, tokenizer): the tiny seeded Llama. ``overrides`` change the LlamaConfig."""
    from transformers import LlamaForCausalLM

    config = tiny_config(**overrides)
    model: Any = LlamaForCausalLM(config)
    _seeded_init(model, seed)
    model.to(dtype)
    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.eos_token_id = IM_END_ID
    model.generation_config.bos_token_id = None
    model.eval()
    return model, byte_tokenizer()


def tiny_loaded(seed: int = 0) -> Any:
    """A fresh :class:`~adapterhub.protocols.basemodel.LoadedBase` of the tiny model, named
    as its alias ``tiny-random-llama`` (for hosts built outside a fixture's scope)."""
    from adapterhub.protocols.basemodel import LoadedBase

    model, tok = tiny_llama(seed=seed)
    return LoadedBase(name="tiny-random-llama", model=model, tokenizer=tok, path=None)


def save_model_dir(model: Any, tokenizer: Any, directory: str | os.PathLike[str]) -> Path:
    """Write a tiny model as an ordinary safetensors model directory."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    tokenizer.save_pretrained(d)
    return d


def tiny_llama_dir(directory: str | os.PathLike[str], seed: int = 0, **overrides: Any) -> Path:
    """Write ``tiny_llama(seed, **overrides)`` into ``directory`` and return it."""
    model, tokenizer = tiny_llama(seed=seed, **overrides)
    return save_model_dir(model, tokenizer, directory)
