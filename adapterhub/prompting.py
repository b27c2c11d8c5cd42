"""How a user prompt becomes model input text, shared by training, evaluation and serving.

Training, evaluation and the host must format prompts identically or an adapter is
served a distribution it never saw. With a chat template the prompt is one user turn
followed by the assistant generation prompt; without one, a minimal plain template.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from adapterhub.errors import ConfigError

PLAIN_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def format_prompt(tokenizer: Any, prompt: str, system: str | None = None) -> str:
    """The text the model sees before its completion (no special tokens added later)."""
    if has_chat_template(tokenizer):
        messages = []
        if system is not None:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": prompt})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return str(text)
    return PLAIN_TEMPLATE.format(prompt=prompt)


def format_messages(tokenizer: Any, messages: Sequence[Mapping[str, str]], system: str | None = None) -> str:
    """Multi-turn chat text ending in the assistant generation prompt.

    ``system`` is the adapter's training system turn; it is inserted only when the
    messages bring no system turn of their own. One user message renders exactly as
    :func:`format_prompt` renders its text. Without a chat template, earlier turns are
    laid out with the plain template, one instruction/response pair per exchange.
    """
    turns = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
    if not turns or turns[-1]["role"] != "user":
        raise ConfigError("chat messages must end with a user message")
    if has_chat_template(tokenizer):
        if system is not None and turns[0]["role"] != "system":
            turns.insert(0, {"role": "system", "content": system})
        return str(tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True))
    parts: list[str] = []
    for t in turns:
        if t["role"] == "user":
            parts.append(PLAIN_TEMPLATE.format(prompt=t["content"]))
        elif t["role"] == "assistant":
            parts.append(t["content"] + "\n\n")
        else:
            parts.append(t["content"] + "\n\n")
    return "".join(parts)
