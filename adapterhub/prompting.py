"""How a user prompt becomes model input text, shared by training, evaluation and serving.

Training, evaluation and the host must format prompts identically or an adapter is
served a distribution it never saw. With a chat template the prompt is one user turn
followed by the assistant generation prompt; without one, a minimal plain template.
"""

from __future__ import annotations

from typing import Any

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
