"""The demo's HTTP stage: ``adapterhub serve``'s app, in-process on a free loopback port,
asked through the official ``openai`` client one question per trained adapter plus one
with the bare base (the last one streamed)."""

from __future__ import annotations

import sys
import time
from typing import Any

BASE_ALIAS = "base"
MAX_TOKENS = 40
TEMPLATE_ROOM = 96
"""Tokens left for the chat template around a question cut to fit the context window."""


def _fit(host: Any, prompt: str) -> str:
    """``prompt``, cut so that it, its template and the answer fit the base's context
    window (the tiny test model has 512 tokens; a real base cuts nothing)."""
    budget = int(host.context_window) - MAX_TOKENS - TEMPLATE_ROOM
    ids = host.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if len(ids) <= budget:
        return prompt
    return str(host.tokenizer.decode(ids[:max(budget, 1)]))


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def http_stage(host: Any, questions: list[tuple[str, str | None]]) -> dict[str, Any]:
    """Serve ``host`` (its pool holds the adapters ``questions`` name: ``(prompt, adapter
    name)``, None for the bare base) and ask each question over HTTP; the last one is
    streamed."""
    try:
        import openai
    except ImportError:
        _say("  skipped: the openai client is not installed (pip install openai)")
        return {"skipped": "openai is not installed"}
    from openai.types.chat import ChatCompletionMessageParam

    from adapterhub.serving import Engine
    from adapterhub.serving.http.app import create_app
    from adapterhub.serving.http.inprocess import serve_in_process

    answers = []
    t0 = time.perf_counter()
    with Engine(host) as engine, serve_in_process(create_app(engine, base_alias=BASE_ALIAS)) as root:
        url = root + "/v1"
        _say(f"  serving on {url} (OpenAI-compatible; model = adapter name or {BASE_ALIAS!r})")
        client = openai.OpenAI(base_url=url, api_key="demo", max_retries=0, timeout=300)
        for i, (prompt, name) in enumerate(questions):
            streamed = i == len(questions) - 1
            messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": _fit(host, prompt)}]
            model = name or BASE_ALIAS
            if streamed:
                text, served = "", model
                for chunk in client.chat.completions.create(model=model, messages=messages,
                                                            max_tokens=MAX_TOKENS, temperature=0, stream=True):
                    served = chunk.model
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
            else:
                r = client.chat.completions.create(model=model, messages=messages,
                                                   max_tokens=MAX_TOKENS, temperature=0)
                text, served = r.choices[0].message.content or "", r.model
            _say(f"  [{served}{', streamed' if streamed else ''}] {prompt[:70]!r}…\n      → {text.strip()[:200]!r}")
            answers.append({"prompt": prompt, "model": served, "streamed": streamed, "completion": text})
    return {"url_kind": "in-process, 127.0.0.1, free port", "seconds": round(time.perf_counter() - t0, 2),
            "answers": answers}
