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
