"""How a user prompt becomes model input text, shared by training, evaluation and serving.

Training, evaluation and the host must format prompts identically or an adapter is
served a distribution it never saw. With a chat template the prompt is one user turn
followed by the assistant generation prompt; without one, a minimal plain template.
Few-shot evaluation puts solved examples before the prompt as prior turns of the same
template (:func:`format_few_shot`), so K shots cost exactly the tokens a user would pay.
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


def format_few_shot(
    tokenizer: Any, prompt: str, shots: Sequence[tuple[str, str]], template: str | None = None
) -> str:
    """``prompt`` preceded by solved examples ``shots`` ((prompt, completion) pairs).

    The shots are prior turns of the same template the adapter is served with: with a
    chat template K user/assistant exchanges before the user turn (``chat-short`` keeps
    its empty system turn first); with a text template (``alpaca``, ``plain``) K
    instruction/response blocks, each ending in a blank line, as :func:`format_messages`
    lays out a plain conversation. No EOS inside: the model should read them as context.
    With no shots this is exactly the zero-shot prompt
    (:func:`adapterhub.trainer.templates.format_prompt`).
    """
    # The template names and their text forms live with the trainer (it owns training
    # formatting); imported here, not at the top, because that module imports this one.
    from adapterhub.trainer.templates import format_prompt as template_prompt
    from adapterhub.trainer.templates import resolve_template

    name = resolve_template(tokenizer, template)
    if not shots:
        return template_prompt(tokenizer, prompt, name)
    if name.startswith("chat"):
        turns: list[dict[str, str]] = [{"role": "system", "content": ""}] if name == "chat-short" else []
        for shot_prompt, shot_completion in shots:
            turns += [{"role": "user", "content": shot_prompt}, {"role": "assistant", "content": shot_completion}]
        turns.append({"role": "user", "content": prompt})
        try:
            return str(tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True))
        except Exception as exc:  # jinja raises its own errors
            raise ConfigError(f"template {name!r}: the tokenizer's chat template failed on few-shot turns: {exc}") from None
    blocks = [template_prompt(tokenizer, p, name) + c + "\n\n" for p, c in shots]
    return "".join(blocks) + template_prompt(tokenizer, prompt, name)
