"""Prompt templates: how an instruction becomes the text the model sees.

Training and serving must format prompts identically. The shared rule lives in
:mod:`adapterhub.prompting` (used by ``AdapterHost`` and evaluation); this module builds
the trainer's (prompt, completion) pairs on top of it, so the default template here is,
token for token, what the host sends at inference.

Templates (``template=`` / ``--template``):

* ``auto`` (default): ``chat`` when the tokenizer has a chat template, else ``alpaca``
  (exactly :func:`adapterhub.prompting.format_prompt`).
* ``chat``: the tokenizer's own chat template, the prompt as the user turn and the
  completion as the assistant turn (the base model sees exactly what it was tuned on,
  including a default system prompt if the template adds one).
* ``chat-short``: the chat template with an *empty* system turn. SmolLM2's template
  otherwise injects a 17-token system prompt into every example; on short tasks such as
  sentiment (about 45 prompt tokens) that is a third of the compute for nothing. An
  adapter trained this way must be served with the same template (recorded in the
  manifest's ``provenance.hyperparameters.template``; ``prompting.format_prompt(...,
  system="")`` renders it).
* ``plain``: ``"{prompt}\\n"`` then the completion and the EOS token.
* ``alpaca``: ``"### Instruction:\\n{prompt}\\n\\n### Response:\\n"``.

The completion is everything the chat template appends for the assistant turn, cut right
after the end-of-turn token (SmolLM2: ``positive<|im_end|>``), so the model learns to stop.
"""

from __future__ import annotations

from typing import Any

from adapterhub.errors import ConfigError
from adapterhub.prompting import PLAIN_TEMPLATE
from adapterhub.prompting import format_prompt as shared_format_prompt

TEMPLATES: tuple[str, ...] = ("auto", "chat", "chat-short", "plain", "alpaca")
_TEXT_TEMPLATES = {
    "plain": "{prompt}\n",
    "alpaca": PLAIN_TEMPLATE,
}
# Stands in for the user's prompt when splitting a rendered template into the parts
# before and after it (for left-truncation that keeps the template's own tokens).
_SENTINEL = "\u2063\u2063ADAPTERHUB_PROMPT\u2063\u2063"


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def resolve_template(tokenizer: Any, template: str | None = None) -> str:
    """The concrete template name (``auto`` resolved) or a one-line ConfigError."""
    name = template or "auto"
    if name not in TEMPLATES:
        raise ConfigError(f"unknown template {name!r} (one of {', '.join(TEMPLATES)})")
    if name == "auto":
        return "chat" if has_chat_template(tokenizer) else "alpaca"
    if name.startswith("chat") and not has_chat_template(tokenizer):
        raise ConfigError(f"template {name!r} needs a tokenizer with a chat template; use 'plain' or 'alpaca'")
    return name


def _messages(name: str, prompt: str, completion: str | None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": ""}] if name == "chat-short" else []
    msgs.append({"role": "user", "content": prompt})
    if completion is not None:
        msgs.append({"role": "assistant", "content": completion})
    return msgs


def _render_chat(tokenizer: Any, name: str, prompt: str, completion: str | None) -> str:
    try:
        if completion is None:  # the generation prompt: exactly the host's rendering
            system = "" if name == "chat-short" else None
            return shared_format_prompt(tokenizer, prompt, system=system)
        text = tokenizer.apply_chat_template(_messages(name, prompt, completion), tokenize=False)
    except Exception as exc:  # jinja raises its own errors, e.g. "system role not supported"
        raise ConfigError(f"template {name!r}: the tokenizer's chat template failed: {exc}") from None
    return str(text)


def format_prompt(tokenizer: Any, prompt: str, template: str | None = None) -> str:
    """The text the model is given for ``prompt`` (generation starts right after it)."""
    name = resolve_template(tokenizer, template)
    if name.startswith("chat"):
        return _render_chat(tokenizer, name, prompt, None)
    return _TEXT_TEMPLATES[name].format(prompt=prompt)


def _eos(tokenizer: Any) -> str:
    eos = getattr(tokenizer, "eos_token", None)
    return eos if isinstance(eos, str) else ""


def format_example(tokenizer: Any, prompt: str, completion: str, template: str | None = None) -> tuple[str, str]:
    """(prompt text, completion text); their concatenation is the training sequence."""
    name = resolve_template(tokenizer, template)
    prompt_text = format_prompt(tokenizer, prompt, name)
    eos = _eos(tokenizer)
    if name.startswith("chat"):
        full = _render_chat(tokenizer, name, prompt, completion)
        if full.startswith(prompt_text):
            tail = full[len(prompt_text) :]
            # Keep the end-of-turn token (the model must learn to stop) but not the
            # separator the template puts after it: nothing is generated past EOS.
            cut = tail.rfind(eos) if eos else -1
            if cut >= 0 and not tail[cut + len(eos) :].strip():
                tail = tail[: cut + len(eos)]
            return prompt_text, tail
        # A template whose generation prompt is not a prefix of the full conversation:
        # fall back to the completion followed by EOS after the generation prompt.
    return prompt_text, completion + eos


def prompt_frame(tokenizer: Any, template: str | None = None) -> tuple[str, str] | None:
    """(text before, text after) the user's prompt in the rendered prompt, if separable.

    Used to truncate a long prompt's *content* from the left while keeping the
    template's header and generation prompt intact.
    """
    rendered = format_prompt(tokenizer, _SENTINEL, template)
    if rendered.count(_SENTINEL) != 1:
        return None
    head, tail = rendered.split(_SENTINEL)
    return head, tail
