from __future__ import annotations

from typing import Any

import pytest

from adapterhub.errors import ConfigError
from adapterhub.prompting import format_prompt as host_format_prompt
from adapterhub.trainer.templates import (
    format_example,
    format_prompt,
    prompt_frame,
    resolve_template,
)


def test_default_is_the_chat_template_exactly_as_the_host_renders_it(tiny_model: tuple[Any, Any]) -> None:
    _, tok = tiny_model
    assert resolve_template(tok) == "chat"
    prompt, completion = format_example(tok, "Hi there", "positive")
    assert prompt == host_format_prompt(tok, "Hi there") == "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    # the completion ends with the end-of-turn token (the model learns to stop), nothing after
    assert completion == "positive<|im_end|>"


def test_chat_short_adds_an_empty_system_turn(tiny_model: tuple[Any, Any]) -> None:
    _, tok = tiny_model
    prompt, _ = format_example(tok, "Hi", "ok", "chat-short")
    assert prompt == host_format_prompt(tok, "Hi", system="")
    assert prompt.startswith("<|im_start|>system\n<|im_end|>\n")


def test_text_templates_and_no_chat_template(tiny_model: tuple[Any, Any]) -> None:
    _, tok = tiny_model
    assert format_example(tok, "Q?", "A.", "plain") == ("Q?\n", "A.<|im_end|>")
    assert format_example(tok, "Q?", "A.", "alpaca")[0] == "### Instruction:\nQ?\n\n### Response:\n"
    tok.chat_template = None
    assert resolve_template(tok) == "alpaca"
    assert format_prompt(tok, "Q?") == host_format_prompt(tok, "Q?")
    with pytest.raises(ConfigError, match="needs a tokenizer with a chat template"):
        resolve_template(tok, "chat")


def test_unknown_template_is_a_config_error(tiny_model: tuple[Any, Any]) -> None:
    with pytest.raises(ConfigError, match="unknown template 'fancy'"):
        resolve_template(tiny_model[1], "fancy")


def test_prompt_frame_splits_around_the_prompt(tiny_model: tuple[Any, Any]) -> None:
    _, tok = tiny_model
    head, tail = prompt_frame(tok) or ("", "")
    assert head + "Hello" + tail == format_prompt(tok, "Hello")
