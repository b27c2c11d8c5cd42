"""Request bodies into engine parameters: JSON, sampling fields, prompts and messages.

Unknown fields are ignored (as OpenAI does); a known field of the wrong type is a 400
naming it.

A body is read under two limits (:class:`~adapterhub.serving.http.state.HttpLimits`):
its size, checked against ``Content-Length`` before a byte is read and again while a
chunked body streams in (413, never buffered past the cap), and the time it may take to
arrive (408), so a client trickling a body holds one connection for a bounded time.
Parsing the JSON is left to the caller's thread (:func:`parse_json`): a 4 MB body takes
tens of milliseconds to parse, which no other stream should wait for.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect
from starlette.requests import Request as HttpRequest

from adapterhub.serving.http.errors import ApiError

if TYPE_CHECKING:
    from adapterhub.serving.http.state import HttpLimits

DEFAULT_MAX_TOKENS = {"completions": 16, "chat": 256}
"""As OpenAI: 16 for /v1/completions; chat (unbounded there) gets 256, capped to the window."""


class ClientGone(Exception):
    """The client disconnected while its body was being read (nobody to answer)."""


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than {limit} bytes (--max-body-bytes)",
                    code="request_too_large")


async def read_body(request: HttpRequest, limits: HttpLimits) -> bytes:
    """The raw body, within ``limits`` (413 / 408; :class:`ClientGone` if the client left)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise ApiError(400, "invalid Content-Length header") from None
        if n > limits.max_body_bytes:
            raise too_large(limits.max_body_bytes)  # refused before a byte is read
    chunks: list[bytes] = []

    async def collect() -> None:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:  # a chunked body states no length up front
                raise too_large(limits.max_body_bytes)
            chunks.append(chunk)

    try:
        await asyncio.wait_for(collect(), timeout=limits.body_timeout_s)
    except TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {limits.body_timeout_s:g} s (--body-timeout)",
                       code="request_timeout") from None
    except ClientDisconnect:
        raise ClientGone() from None
    return b"".join(chunks)


def parse_json(raw: bytes) -> dict[str, Any]:
    """A JSON object body (run it off the event loop: see module docs)."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


async def read_json(request: HttpRequest, limits: HttpLimits) -> dict[str, Any]:
    """:func:`read_body` then :func:`parse_json` in a thread (small admin bodies)."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(parse_json, await read_body(request, limits))


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
        if get_field(body, "echo", (bool,), False) and lp is not None:
            params["prompt_logprobs"] = lp  # the prompt's tokens get the same alternatives
    constraint = response_format_of(body)
    if constraint is not None:
        params["constraint"] = constraint
    return params


MAX_PROMPTS = 128
"""Prompts in one /v1/completions call (each is one engine request; lm-evaluation-harness
sends batches of a few dozen)."""


def prompts_of(body: dict[str, Any]) -> list[str | list[int]]:
    """``prompt`` as OpenAI accepts it: a string, a list of strings, a list of token ids,
    or a list of such lists; one entry per choice."""
    p = body.get("prompt")
    bad = ApiError(400, "invalid prompt: expected a string, a list of strings, a list of token ids "
                        "or a list of token-id lists", param="prompt")
    if isinstance(p, str):
        return [p]
    if not isinstance(p, list) or not p:
        raise bad
    if all(_is_id(x) for x in p):
        return [list(p)]
    if all(isinstance(x, str) for x in p):
        prompts: list[str | list[int]] = list(p)
    elif all(isinstance(x, list) and x and all(_is_id(t) for t in x) for x in p):
        prompts = [list(x) for x in p]
    else:
        raise bad
    if len(prompts) > MAX_PROMPTS:
        raise ApiError(400, f"at most {MAX_PROMPTS} prompts per request (got {len(prompts)})", param="prompt")
    return prompts


def _is_id(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


# Fields that would change the answer and are not supported: refused by name, never
# ignored (lm-evaluation-harness printed wrong scores when `echo` was ignored). Each
# maps to the values that mean "off", which are accepted.
_UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "presence_penalty": (0, 0.0), "frequency_penalty": (0, 0.0), "repetition_penalty": (1, 1.0),
    "logit_bias": ({},), "suffix": ("",), "tools": ([],), "tool_choice": ("none",), "functions": ([],),
    "function_call": ("none",), "min_tokens": (0,), "guided_json": (), "guided_regex": (), "guided_choice": (),
    "guided_grammar": (), "prediction": (), "audio": (), "modalities": (["text"],), "reasoning_effort": (),
}


def refuse_unsupported(body: dict[str, Any], kind: str) -> None:
    """400 naming the first field that would change the answer and that we do not support."""
    for name, off in _UNSUPPORTED.items():
        v = body.get(name)
        if v is not None and v not in off:
            raise ApiError(400, f"{name} is not supported by this server (only {', '.join(map(repr, off)) or 'its absence'} "
                                "is accepted)", param=name)
    if kind == "chat" and body.get("echo"):
        raise ApiError(400, "echo applies to /v1/completions only", param="echo")


def response_format_of(body: dict[str, Any]) -> dict[str, Any] | None:
    """``response_format`` as a structured-output constraint (None: free text)."""
    rf = body.get("response_format")
    if rf is None:
        return None
    if not isinstance(rf, dict) or not isinstance(rf.get("type"), str):
        raise ApiError(400, "invalid response_format: expected an object with a type", param="response_format")
    kind = rf["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return {"kind": "json_object"}
    if kind == "json_schema":
        spec = rf.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, (dict, bool)):
            raise ApiError(400, "invalid response_format.json_schema: expected {\"name\", \"schema\": {...}}",
                           param="response_format")
        return {"kind": "json_schema", "json_schema": json.dumps(schema)}
    raise ApiError(400, f"invalid response_format.type {kind!r}: expected text, json_object or json_schema",
                   param="response_format")


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
