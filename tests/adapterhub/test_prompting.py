"""adapterhub.prompting: few-shot prompts are prior turns of the adapter's own template."""

from __future__ import annotations

import pytest

from adapterhub.errors import ConfigError
from adapterhub.prompting import PLAIN_TEMPLATE, format_few_shot
from adapterhub.testing.models import tiny_llama
from adapterhub.trainer.templates import format_prompt

SHOTS = [("Review: great fun", "positive"), ("Review: dull", "negative"), ("Review: loved it", "positive")]


@pytest.fixture(scope="module")
def tok():
    return tiny_llama(seed=0)[1]


@pytest.mark.parametrize("template", ["auto", "chat", "chat-short", "plain", "alpaca"])
def test_no_shots_is_the_zero_shot_prompt(tok, template):
    assert format_few_shot(tok, "Review: fine", [], template) == format_prompt(tok, "Review: fine", template)


@pytest.mark.parametrize("k", [1, 3])
def test_chat_template_renders_k_prior_turns(tok, k):
    text = format_few_shot(tok, "Review: fine", SHOTS[:k], "chat")
    turns = [{"role": r, "content": c} for p, a in SHOTS[:k] for r, c in (("user", p), ("assistant", a))]
    expected = tok.apply_chat_template([*turns, {"role": "user", "content": "Review: fine"}], tokenize=False, add_generation_prompt=True)
    assert text == expected
    assert text.count("<|im_start|>user") == k + 1 and text.count("<|im_start|>assistant") == k + 1
    assert text.endswith(format_prompt(tok, "Review: fine", "chat").split("<|im_end|>\n")[-1])


def test_chat_short_keeps_its_empty_system_turn_first(tok):
    text = format_few_shot(tok, "Review: fine", SHOTS[:2], "chat-short")
    assert text.startswith("<|im_start|>system\n<|im_end|>") and text.count("<|im_start|>system") == 1


@pytest.mark.parametrize(("template", "block"), [("alpaca", PLAIN_TEMPLATE), ("plain", "{prompt}\n")])
def test_text_templates_render_k_blocks(tok, template, block):
    text = format_few_shot(tok, "Review: fine", SHOTS, template)
    expected = "".join(block.format(prompt=p) + c + "\n\n" for p, c in SHOTS) + block.format(prompt="Review: fine")
    assert text == expected
    assert tok.eos_token not in text  # shots are context, not ended turns


def test_unknown_template_is_one_line(tok):
    with pytest.raises(ConfigError, match="unknown template 'nope'"):
        format_few_shot(tok, "x", SHOTS, "nope")
