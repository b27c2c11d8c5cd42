"""The OpenAI-compatible HTTP API over one :class:`~adapterhub.serving.Engine` (Starlette).

Routes only translate: JSON into :class:`~adapterhub.serving.Request`, engine deltas into
OpenAI's response and chunk formats, engine errors into status codes. No model logic
lives here (see DESIGN.md, "Serving").

``model`` picks the adapter: a pool name, a registry reference (``team/x``,
``team/x@1.0.0``, ``team/x:stable``) or the base alias (no adapter). An adapter that is
not loaded yet is loaded by the engine in the background; its errors arrive on the
request's handle and are mapped to a status here for a non-stream response, and for a
stream before its first chunk (after that, an ``error`` event ends the stream).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from adapterhub.errors import (
    AdapterhubError,
    AdapterNotFoundError,
    AdapterUnloadedError,
    ArtifactError,
    ConfigError,
    ContextLengthError,
    EngineClosedError,
    IncompatibleAdapterError,
    InvalidNameError,
    QueueFullError,
    StoreError,
)
from adapterhub.serving.http.keys import ANONYMOUS, KeyRing, Principal
from adapterhub.serving.http.metrics import CONTENT_TYPE, Metrics
from adapterhub.serving.request import Completion, Delta, TokenLogprob, make_request

if TYPE_CHECKING:
    from adapterhub.serving.engine import Engine
    from adapterhub.serving.handle import RequestHandle

BASE_WORDS = ("<base>",)
DEFAULT_MAX_TOKENS = {"completions": 16, "chat": 256}
"""As OpenAI: 16 for /v1/completions; chat (unbounded there) gets 256, capped to the window."""
MAX_PAGE = 1000
RETRY_AFTER_S = 1
LOAD_TIMEOUT_S = 300.0


class ApiError(Exception):
    """An error the client gets as ``{"error": {...}}`` with ``status``."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def _msg(exc: BaseException) -> str:
    # KeyError subclasses quote their str(); the first argument is the message.
    return " ".join(str(exc.args[0] if exc.args else exc).split())


def api_error(exc: BaseException, model: str | None = None) -> ApiError:
    """The status and OpenAI error body for an engine/registry error."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, (AdapterNotFoundError, InvalidNameError, AdapterUnloadedError)):
        return not_found(model)
    if isinstance(exc, ContextLengthError):
        return ApiError(400, _msg(exc), code="context_length_exceeded", param="messages")
    if isinstance(exc, QueueFullError):
        return ApiError(429, _msg(exc), "rate_limit_error", "queue_full", headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, (ArtifactError, IncompatibleAdapterError)):
        return ApiError(422, f"adapter {model!r} failed verification: {_msg(exc)}", "invalid_request_error",
                        "adapter_invalid", "model")
    if isinstance(exc, ConfigError):
        text = _msg(exc)
        param = text.removeprefix("invalid ").split(":", 1)[0].split(".")[-1] if text.startswith("invalid ") else None
        return ApiError(400, text, param=param)
    if isinstance(exc, EngineClosedError):
        return ApiError(503, "the server is shutting down", "server_error", "shutting_down")
    if isinstance(exc, StoreError):
        return ApiError(503, f"the registry is unavailable: {_msg(exc)}", "server_error", "registry_unavailable")
    if isinstance(exc, AdapterhubError):
        return ApiError(400, _msg(exc))
    return ApiError(500, "internal error", "server_error", "internal_error")


def not_found(model: str | None) -> ApiError:
    # Same answer for a missing adapter and one the key may not use: no existence leak.
    return ApiError(404, f"The model {model!r} does not exist or you do not have access to it.",
                    code="model_not_found", param="model")


@dataclass
class ServerState:
    engine: Engine
    base_alias: str
    keys: KeyRing | None = None
    registry_url: str | None = None
    metrics: Metrics = field(init=False)
    draining: bool = False
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.engine.stats)


# --- request parsing -----------------------------------------------------------------------
async def _json(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def _get(body: dict[str, Any], name: str, kinds: tuple[type, ...], default: Any = None) -> Any:
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) and bool not in kinds:
        raise ApiError(400, f"invalid {name}: expected {' or '.join(k.__name__ for k in kinds)}", param=name)
    if not isinstance(v, kinds):
        raise ApiError(400, f"invalid {name}: expected {' or '.join(k.__name__ for k in kinds)}", param=name)
    return v


def _sampling(body: dict[str, Any], kind: str) -> dict[str, Any]:
    n = _get(body, "n", (int,), 1)
    if n != 1:
        raise ApiError(400, "only n=1 is supported (send n requests instead)", param="n")
    if _get(body, "best_of", (int,), 1) != 1:
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
    max_tokens = _get(body, "max_tokens", (int,))
    if kind == "chat":
        max_tokens = _get(body, "max_completion_tokens", (int,), max_tokens)
    params: dict[str, Any] = {
        "temperature": float(_get(body, "temperature", (int, float), 1.0)),
        "top_p": float(_get(body, "top_p", (int, float), 1.0)),
        "top_k": _get(body, "top_k", (int,), 0),
        "seed": _get(body, "seed", (int,)),
        "stop": stops,
        "max_tokens": max_tokens if max_tokens is not None else DEFAULT_MAX_TOKENS[kind],
    }
    if params["top_k"] < 0:  # OpenAI-style clients (vLLM) send -1 for "no cut"
        params["top_k"] = 0
    if kind == "chat":
        want = _get(body, "logprobs", (bool,), False)
        top = _get(body, "top_logprobs", (int,), 0)
        if top and not want:
            raise ApiError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
        params.update(logprobs=want, top_logprobs=top)
    else:
        lp = _get(body, "logprobs", (int,))
        if lp is not None:
            params.update(logprobs=True, top_logprobs=lp)
    return params


def _prompt(body: dict[str, Any]) -> str:
    p = body.get("prompt")
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
        p = p[0]
    if isinstance(p, list) and all(isinstance(x, str) for x in p):
        raise ApiError(400, "one prompt per request is supported (send several requests)", param="prompt")
    if not isinstance(p, str):
        raise ApiError(400, "invalid prompt: expected a string", param="prompt")
    return p


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
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


def _principal(state: ServerState, request: HttpRequest) -> Principal:
    if state.keys is None:
        return ANONYMOUS
    p = state.keys.authenticate(request.headers.get("authorization"))
    if p is None:
        raise ApiError(401, "missing or invalid API key (send Authorization: Bearer <key>)",
                       "authentication_error", "invalid_api_key")
    return p


def _adapter_for(state: ServerState, principal: Principal, model: Any) -> str | None:
    if not isinstance(model, str) or not model.strip():
        raise ApiError(400, "invalid model: expected a string", param="model")
    if model == state.base_alias or model in BASE_WORDS:
        return None
    if not principal.allows(model):
        raise not_found(model)
    return model


# --- responses -----------------------------------------------------------------------------
def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _chat_logprobs(lps: list[TokenLogprob]) -> dict[str, Any]:
    def one(token: str, lp: float) -> dict[str, Any]:
        return {"token": token, "logprob": lp, "bytes": list(token.encode("utf-8"))}

    return {"content": [
        {**one(t.token, t.logprob), "top_logprobs": [one(tok, v) for _, tok, v in t.top]} for t in lps
    ], "refusal": None}


def _completion_logprobs(lps: list[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    offsets, pos = [], offset
    for t in lps:
        offsets.append(pos)
        pos += len(t.token)
    return {
        "tokens": [t.token for t in lps],
        "token_logprobs": [t.logprob for t in lps],
        "top_logprobs": [{tok: v for _, tok, v in t.top} for t in lps] if any(t.top for t in lps) else None,
        "text_offset": offsets,
    }


@dataclass
class _Call:
    """One completion call in flight: what the route needs to answer and to count."""

    state: ServerState
    kind: str  # "chat" | "completions"
    model: str
    principal: Principal
    handle: RequestHandle
    want_logprobs: bool
    started: float
    rid: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    created: int = field(default_factory=lambda: int(time.time()))
    last_token_at: float | None = None
    first_token_at: float | None = None
    gaps: list[tuple[float, int]] = field(default_factory=list)  # (seconds per token, tokens)

    @property
    def object_id(self) -> str:
        return ("chatcmpl-" if self.kind == "chat" else "cmpl-") + self.rid

    def label(self, c: Completion | None) -> str:
        return (c.adapter if c is not None else None) or self.state.base_alias

    def observe(self, d: Delta) -> None:
        """Note when tokens arrive (observed into the histograms once the adapter that
        served the request is known, so every metric of a request has the same label)."""
        if not d.token_ids:
            return
        now = time.perf_counter()
        if self.first_token_at is None:
            self.first_token_at = now
        elif self.last_token_at is not None:
            self.gaps.append(((now - self.last_token_at) / len(d.token_ids), len(d.token_ids)))
        self.last_token_at = now

    def count(self, status: int, c: Completion | None) -> None:
        m, adapter = self.state.metrics, self.label(c) if status < 400 or c is not None else "-"
        m.requests.labels(self.kind, str(status), adapter, self.principal.name).inc()
        if c is None:
            return
        m.prompt_tokens.labels(adapter).inc(c.prompt_tokens)
        m.completion_tokens.labels(adapter).inc(c.completion_tokens)
        m.latency.labels(adapter).observe(time.perf_counter() - self.started)
        if self.first_token_at is not None:
            m.ttft.labels(adapter).observe(self.first_token_at - self.started)
        itl = m.itl.labels(adapter)
        for gap, n in self.gaps:
            for _ in range(n):
                itl.observe(gap)

    def body(self, c: Completion) -> dict[str, Any]:
        if self.kind == "chat":
            choice: dict[str, Any] = {
                "index": 0, "message": {"role": "assistant", "content": c.text, "refusal": None},
                "finish_reason": _reason(c.finish_reason),
                "logprobs": _chat_logprobs(c.logprobs) if self.want_logprobs else None,
            }
            obj = "chat.completion"
        else:
            choice = {
                "index": 0, "text": c.text, "finish_reason": _reason(c.finish_reason),
                "logprobs": _completion_logprobs(c.logprobs) if self.want_logprobs else None,
            }
            obj = "text_completion"
        return {
            "id": self.object_id, "object": obj, "created": self.created, "model": self.label(c),
            "choices": [choice], "usage": _usage(c.prompt_tokens, c.completion_tokens),
            "system_fingerprint": None,
        }

    def chunk(self, d: Delta, model: str, first: bool, offset: int) -> dict[str, Any]:
        reason = _reason(d.finish_reason) if d.finish_reason else None
        if self.kind == "chat":
            delta: dict[str, Any] = {"content": d.text}
            if first:
                delta["role"] = "assistant"
            choice: dict[str, Any] = {
                "index": 0, "delta": delta, "finish_reason": reason,
                "logprobs": _chat_logprobs(d.logprobs) if self.want_logprobs else None,
            }
            obj = "chat.completion.chunk"
        else:
            choice = {
                "index": 0, "text": d.text, "finish_reason": reason,
                "logprobs": _completion_logprobs(d.logprobs, offset) if self.want_logprobs else None,
            }
            obj = "text_completion"
        return {"id": self.object_id, "object": obj, "created": self.created, "model": model,
                "choices": [choice], "system_fingerprint": None}


def _reason(r: str) -> str:
    # "cancelled" only reaches a client that is still there when the server shuts down.
    return r if r in ("stop", "length") else "stop"


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


# --- routes --------------------------------------------------------------------------------
def create_app(
    engine: Engine, *, base_alias: str | None = None, keys: KeyRing | None = None, registry_url: str | None = None,
) -> Starlette:
    """The ASGI app serving ``engine`` (started here if it is not yet)."""
    state = ServerState(engine, base_alias or engine.host.base.name, keys, registry_url)

    async def completions(request: HttpRequest) -> Response:
        return await _complete(state, request, "completions")

    async def chat(request: HttpRequest) -> Response:
        return await _complete(state, request, "chat")

    async def health(request: HttpRequest) -> Response:
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return JSONResponse({"status": "ok", "base": state.base_alias})

    async def metrics(request: HttpRequest) -> Response:
        # With keys, only an admin key may scrape: labels name adapters and keys.
        try:
            if not _principal(state, request).admin:
                raise ApiError(403, "only an admin key may read the metrics", "permission_error", "forbidden")
        except ApiError as e:
            return e.response()
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    async def models(request: HttpRequest) -> Response:
        try:
            principal = _principal(state, request)
            return JSONResponse(await run_in_threadpool(_models, state, principal, request.query_params))
        except ApiError as e:
            return e.response()

    async def load(request: HttpRequest) -> Response:
        return await _admin(state, request, "load")

    async def unload(request: HttpRequest) -> Response:
        return await _admin(state, request, "unload")

    async def not_found_route(request: HttpRequest, exc: Exception) -> Response:
        return ApiError(404, f"no route {request.method} {request.url.path}", code="not_found").response()

    async def bad_method(request: HttpRequest, exc: Exception) -> Response:
        return ApiError(405, f"method {request.method} not allowed on {request.url.path}").response()

    async def crash(request: HttpRequest, exc: Exception) -> Response:
        return ApiError(500, "internal error", "server_error", "internal_error").response()

    routes = [
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/adapters/load", load, methods=["POST"]),
        Route("/v1/adapters/unload", unload, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found_route, 405: bad_method, Exception: crash})
    app.state.server = state
    engine.start()
    return app


async def _complete(state: ServerState, request: HttpRequest, kind: str) -> Response:
    started = time.perf_counter()
    principal = ANONYMOUS
    model = "-"
    try:
        if state.draining:
            raise ApiError(503, "the server is shutting down", "server_error", "shutting_down")
        principal = _principal(state, request)
        body = await _json(request)
        asked = body.get("model")
        model = asked if isinstance(asked, str) else "-"
        adapter = _adapter_for(state, principal, body.get("model"))
        params = _sampling(body, kind)
        prompt: Any = _messages(body) if kind == "chat" else _prompt(body)
        stream = _get(body, "stream", (bool,), False)
        opts = body.get("stream_options")
        include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
        try:
            req = make_request(prompt, adapter, raw=kind == "completions", **params)
            handle = state.engine.submit(req)
        except (AdapterhubError, ValueError) as exc:
            err = api_error(exc, model)
            if err.code == "context_length_exceeded" and kind == "completions":
                err.param = "prompt"
            raise err from None
    except ApiError as e:
        state.metrics.requests.labels(kind, str(e.status), "-", principal.name).inc()
        return e.response()
    call = _Call(state, kind, model, principal, handle, bool(params.get("logprobs")), started)
    if stream:
        return await _stream(call, include_usage)
    watcher = asyncio.create_task(_cancel_on_disconnect(request, handle))
    try:
        async for d in handle:
            call.observe(d)
        c = handle.result(timeout=0)
    except BaseException as exc:
        if not handle.done:
            handle.cancel()
        if not isinstance(exc, Exception):
            raise
        err = api_error(exc, model)
        call.count(err.status, None)
        return err.response()
    finally:
        watcher.cancel()
    if c.finish_reason == "cancelled" and handle.cancelled:  # the client went away
        call.count(499, c)
        return Response(status_code=499)
    call.count(200, c)
    return JSONResponse(call.body(c))


async def _cancel_on_disconnect(request: HttpRequest, handle: RequestHandle) -> None:
    """Cancel ``handle`` when the client of a non-stream request disconnects (the body is
    read already, so the next ASGI message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            handle.cancel()
            return


async def _stream(call: _Call, include_usage: bool) -> Response:
    handle = call.handle
    it = cast("AsyncGenerator[Delta, None]", handle.__aiter__())
    # Wait for the first delta (the adapter is loaded and the prompt prefilled by then),
    # so that a failing load still gets its own status instead of a 200 stream.
    try:
        first: Delta | None = await it.__anext__()
    except StopAsyncIteration:
        first = None
    except BaseException as exc:
        if not handle.done:
            handle.cancel()
        await it.aclose()
        if not isinstance(exc, Exception):
            raise
        err = api_error(exc, call.model)
        call.count(err.status, None)
        return err.response()

    async def events() -> AsyncIterator[bytes]:
        completion: Completion | None = None
        status = 200
        try:
            pending = [first] if first is not None else []
            n, offset = 0, 0
            model = _served_model(call)
            while True:
                if pending:
                    d = pending.pop()
                else:
                    try:
                        d = await it.__anext__()
                    except StopAsyncIteration:
                        break
                call.observe(d)
                if d.finish_reason is not None:
                    completion = handle.result(timeout=5)
                    model = call.label(completion)
                chunk = call.chunk(d, model, n == 0, offset)
                offset += len(d.text)
                if completion is not None:
                    usage = _usage(completion.prompt_tokens, completion.completion_tokens)
                    if not include_usage:
                        chunk["usage"] = usage
                    yield _sse(chunk)
                    if include_usage:
                        yield _sse({**chunk, "choices": [], "usage": usage})
                elif d.text or d.logprobs or n == 0:
                    yield _sse(chunk)
                n += 1
            yield b"data: [DONE]\n\n"
        except Exception as exc:  # an error after the first chunk: an error event ends the stream
            err = api_error(exc, call.model)
            status = err.status
            yield _sse(err.body())
            yield b"data: [DONE]\n\n"
        finally:
            # Reached on a client disconnect too (the task is cancelled): free the row.
            if not handle.done:
                handle.cancel()
                status = 499
            await it.aclose()
            call.count(status, completion)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _served_model(call: _Call) -> str:
    """The ``model`` of chunks before the last one: the resolved key when the pool knows it."""
    if call.handle.request.adapter is None:
        return call.state.base_alias
    try:
        return call.state.engine.host.entry(call.model).label
    except AdapterhubError:
        return call.model


def _models(state: ServerState, principal: Principal, query: Any) -> dict[str, Any]:
    host = state.engine.host
    created = state.created
    rows: dict[str, dict[str, Any]] = {}
    rows[state.base_alias] = {"id": state.base_alias, "object": "model", "created": created, "owned_by": "adapterhub",
                              "kind": "base", "method": None, "task": None, "metrics": {}, "loaded": True}
    for a in host.adapters():
        try:
            entry = host.entry(a["name"])
        except AdapterhubError:
            continue
        man = entry.manifest
        rows[a["name"]] = {
            "id": a["name"], "object": "model", "created": created, "owned_by": "adapterhub", "kind": "adapter",
            "root": entry.label, "parent": state.base_alias, "method": a["method"], "task": getattr(man, "task", None),
            "metrics": _manifest_metrics(man), "loaded": True,
        }
    for r in _registry_rows(state):
        rows.setdefault(r["name"], {
            "id": r["name"], "object": "model", "created": created, "owned_by": "adapterhub", "kind": "adapter",
            "root": r.get("ref"), "parent": state.base_alias, "method": r.get("method"), "task": r.get("task"),
            "metrics": r.get("metrics") or {}, "loaded": False,
        })
    ids = sorted(i for i in rows if i == state.base_alias or principal.allows(i))
    ids.remove(state.base_alias)
    ids.insert(0, state.base_alias)
    try:
        limit = int(query.get("limit", 100))
    except ValueError:
        raise ApiError(400, "invalid limit: expected an integer", param="limit") from None
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError(400, f"invalid limit: must be 1..{MAX_PAGE}", param="limit")
    after = query.get("after")
    start = ids.index(after) + 1 if after in ids else 0
    page = ids[start:start + limit]
    return {
        "object": "list", "data": [rows[i] for i in page], "has_more": start + limit < len(ids),
        "first_id": page[0] if page else None, "last_id": page[-1] if page else None,
    }


def _manifest_metrics(man: Any) -> dict[str, Any]:
    for attr in ("metrics", "evaluation"):
        v: Any = getattr(man, attr, None)
        if isinstance(v, dict):
            return v
        if v is not None and hasattr(v, "model_dump"):
            return dict(v.model_dump())
    return {}


def _registry_rows(state: ServerState) -> list[dict[str, Any]]:
    """The latest version of each registry adapter for this base (the local index when
    the registry is local; a remote store lists names and versions only)."""
    try:
        from adapterhub.registry.client import Registry

        reg = Registry(progress=False)
        base = state.engine.host.base.name
        if state.registry_url is None:
            latest: dict[str, dict[str, Any]] = {}
            for r in reg.search(base=base):
                latest[r["name"]] = r  # ordered by version: the last one wins
            return list(latest.values())
        return [{"name": r["name"], "ref": f"{r['name']}@{r['latest']}"} for r in reg.ls(from_=state.registry_url)]
    except Exception:  # noqa: BLE001 - listing must not fail because the registry is down
        return []


async def _admin(state: ServerState, request: HttpRequest, action: str) -> Response:
    ref: Any = None
    try:
        principal = _principal(state, request)
        if not principal.admin:
            raise ApiError(403, "this key may not load or unload adapters", "permission_error", "forbidden")
        body = await _json(request)
        ref = body.get("model", body.get("adapter"))
        if not isinstance(ref, str) or not ref:
            raise ApiError(400, "invalid model: expected the adapter reference", param="model")
        if ref == state.base_alias or ref in BASE_WORDS:
            raise ApiError(400, "the base model is always loaded", param="model")
        if action == "load":
            key = await run_in_threadpool(_load, state, ref)
            result: dict[str, Any] = {"id": key, "loaded": True}
        else:
            removed = await run_in_threadpool(_unload, state, ref)
            result = {"unloaded": removed}
        state.metrics.requests.labels(action, "200", "-", principal.name).inc()
        return JSONResponse(result)
    except ApiError as e:
        state.metrics.requests.labels(action, str(e.status), "-", "-").inc()
        return e.response()
    except AdapterhubError as exc:
        err = api_error(exc, ref if isinstance(ref, str) else None)
        state.metrics.requests.labels(action, str(err.status), "-", "-").inc()
        return err.response()


def _load(state: ServerState, ref: str) -> str:
    from adapterhub.serving.adapters import Ticket

    found = state.engine.adapters.lookup(ref)
    if not isinstance(found, Ticket):
        return found
    if not found.wait(LOAD_TIMEOUT_S):
        raise ApiError(504, f"loading {ref!r} takes longer than {LOAD_TIMEOUT_S:.0f} s", "server_error", "timeout")
    if found.error is not None:
        raise api_error(found.error, ref)
    assert found.key is not None
    return found.key


def _unload(state: ServerState, ref: str) -> list[str]:
    host = state.engine.host
    names = host.loaded()
    targets = [ref] if ref in names else [n for n in names if n.split("@", 1)[0] == ref.split("@", 1)[0].split(":", 1)[0]]
    if not targets:
        raise not_found(ref)
    for n in targets:
        host.unload(n)
    return targets
