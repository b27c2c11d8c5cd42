"""Request bodies into engine parameters: JSON, sampling fields, prompts and messages.

Unknown fields are ignored (as OpenAI does); a known field of the wrong type is a 400
naming it.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request as HttpRequest

from adapterhub.serving.http.errors import ApiError

DEFAULT_MAX_TOKENS = {"completions": 16, "chat": 256}
"""As OpenAI: 16 for /v1/completions; chat (unbounded there) gets 256, capped to the window."""


async def read_json(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def get_field(body: dict[str, Any], name: str, kinds: tuple[type, ...], default: Any = None) -> Any:
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) and bool not in kinds:
        raise ApiError(400, f"invalid {name}: expected {' or '.join(k.__name__ for k in kinds)}", param=name)
    if not isinstance(v, kinds):
        raise ApiError(400, f"invalid {name}: expected {' or '.join(k.__name__ for k in kinds)}", param=name)
    return v


def sampling(body: dict[str, Any], kind: str) -> dict[str, Any]:
    n = get_field(body, "n", (int,), 1)
    if n != 1:
        raise ApiError(400, "only n=1 is supported (send n requests instead)", param="n")
    if get_field(body, "best_of", (int,), 1) != 1:
        raise ApiError(400, "only best_of=1 is supported", param="best_of")
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    else:
        raise ApiError(400, "invalid stop: expected a string or a list of strings", param="stop")
    max_tokens = get_field(body, "max_tokens", (int,))
    if kind == "chat":
        max_tokens = get_field(body, "max_completion_tokens", (int,), max_tokens)
    params: dict[str, Any] = {
        "temperature": float(get_field(body, "temperature", (int, float), 1.0)),
        "top_p": float(get_field(body, "top_p", (int, float), 1.0)),
        "top_k": get_field(body, "top_k", (int,), 0),
        "seed": get_field(body, "seed", (int,)),
        "stop": stops,
        "max_tokens": max_tokens if max_tokens is not None else DEFAULT_MAX_TOKENS[kind],
    }
    if params["top_k"] < 0:  # OpenAI-style clients (vLLM) send -1 for "no cut"
        params["top_k"] = 0
    if kind == "chat":
        want = get_field(body, "logprobs", (bool,), False)
        top = get_field(body, "top_logprobs", (int,), 0)
        if top and not want:
            raise ApiError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
        params.update(logprobs=want, top_logprobs=top)
    else:
        lp = get_field(body, "logprobs", (int,))
        if lp is not None:
            params.update(logprobs=True, top_logprobs=lp)
    return params


def prompt_of(body: dict[str, Any]) -> str:
    p = body.get("prompt")
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
        p = p[0]
    if isinstance(p, list) and all(isinstance(x, str) for x in p):
        raise ApiError(400, "one prompt per request is supported (send several requests)", param="prompt")
    if not isinstance(p, str):
        raise ApiError(400, "invalid prompt: expected a string", param="prompt")
    return p


def messages_of(body: dict[str, Any]) -> list[dict[str, str]]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ApiError(400, "invalid messages: expected a non-empty list", param="messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(400, f"invalid messages.{i}: expected an object with a role", param="messages")
        content = m.get("content")
        if isinstance(content, list):  # content parts: text only
            texts = [c.get("text") for c in content if isinstance(c, dict)]
            if not all(isinstance(c, dict) and c.get("type") == "text" and isinstance(c.get("text"), str) for c in content):
                raise ApiError(400, f"invalid messages.{i}.content: only text parts are supported", param="messages")
            content = "".join(t for t in texts if t)
        if not isinstance(content, str):
            raise ApiError(400, f"invalid messages.{i}.content: expected a string", param="messages")
        role = "system" if m["role"] == "developer" else m["role"]
        out.append({"role": role, "content": content})
    return out
