"""vLLM's tokenizer routes: ``POST /tokenize``, ``POST /detokenize``, ``GET /tokenizer_info``.

lm-evaluation-harness (``local-completions`` with ``tokenizer_backend=remote``, or
``auto``, which probes ``/tokenizer_info`` then ``/tokenize``) and other vLLM clients use
them to count and split tokens with the server's own tokenizer instead of downloading one.
lm-eval's remote tokenizer sends no ``model`` (the base is meant) and reads
``tokenizer_info["eos_token"]`` / ``["bos_token"]`` / ``["chat_template"]``; they are here.

Two deliberate differences from vLLM, both so a count here is what the engine feeds the
model: ``add_special_tokens`` defaults to false for a ``prompt`` too (our
``/v1/completions`` never adds a BOS), and ``messages`` are rendered by the host exactly as
``/v1/chat/completions`` renders them for that adapter (its training template, e.g. the
empty system turn of ``chat-short``). Options that would change the tokens and that we do
not support (a request-supplied ``chat_template``, ``tools``, ``continue_final_message``,
``add_generation_prompt: false``) are a 400 naming them, never ignored.

Same keys as every route: a key may tokenize for the base and for the adapters it may use
(404 otherwise, as for completions). Tokenizing runs in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response

from adapterhub.access import note
from adapterhub.errors import AdapterhubError
from adapterhub.serving.http.errors import ApiError, api_error
from adapterhub.serving.http.keys import Principal
from adapterhub.serving.http.parsing import ClientGone, get_field, messages_of, read_json

if TYPE_CHECKING:
    from adapterhub.host.host import PoolEntry
    from adapterhub.serving.http.state import ServerState

LOAD_TIMEOUT_S = 300.0


class LocalHost(Protocol):
    """What these routes (and vLLM's load route) need beyond :class:`~.backend.HostView`:
    the tokenizer, the renderer and named loads, which only an in-process host has."""

    @property
    def tokenizer(self) -> Any: ...

    def render(self, prompt: Any, entry: Any, raw: bool = False) -> str: ...

    def entry(self, name: str) -> Any: ...

    def load(self, source: Any, *, name: str | None = None) -> Any: ...

    def loaded(self) -> list[str]: ...


class LocalEngine(Protocol):
    @property
    def host(self) -> LocalHost: ...

    @property
    def max_model_len(self) -> int: ...

    @property
    def adapters(self) -> Any: ...

    def load(self, ref: str, timeout: float | None = None) -> str: ...

    def unload(self, name: str) -> None: ...


def local_engine(state: ServerState, route: str) -> LocalEngine:
    """The in-process engine; 501 under ``serve --ray``, whose tokenizer and adapter pool
    live in the replicas (the HTTP process holds neither)."""
    eng = state.engine
    if not (hasattr(eng.host, "tokenizer") and hasattr(eng.host, "render") and hasattr(eng, "max_model_len")):
        raise ApiError(501, f"{route} is not available with serve --ray (the tokenizer and adapters live in the replicas)",
                       "server_error", "not_implemented")
    return cast(LocalEngine, eng)

_UNSUPPORTED = ("chat_template", "chat_template_kwargs", "tools", "mm_processor_kwargs")
"""Tokenize options that change the tokens and that we do not honour (a 400 naming them)."""

_INFO_FIELDS = ("add_bos_token", "add_eos_token", "clean_up_tokenization_spaces", "padding_side", "truncation_side")
"""Tokenizer settings copied into ``/tokenizer_info`` when the tokenizer has them."""


async def _answer(state: ServerState, request: HttpRequest, route: str,
                  work: Callable[[ServerState, Principal, dict[str, Any]], dict[str, Any]], body: bool = True) -> Response:
    """Authenticate, read the body, run ``work`` in a thread; errors as OpenAI bodies."""
    model: str | None = None
    try:
        principal = state.principal(request)
        note(key=principal.name)
        payload = await read_json(request, state.limits) if body else {}
        asked = payload.get("model")
        model = asked if isinstance(asked, str) else None
        result = await run_in_threadpool(work, state, principal, payload)
        # No model label: it is whatever the client sent, and labels must stay few.
        state.metrics.requests.labels(route, "200", "-", principal.name).inc()
        return JSONResponse(result)
    except ClientGone:
        return Response(status_code=499)
    except (ApiError, AdapterhubError) as exc:
        err = api_error(exc, model)
        state.metrics.requests.labels(route, str(err.status), "-", "-").inc()
        return err.response()


def _entry(state: ServerState, principal: Principal, body: dict[str, Any]) -> PoolEntry | None:
    """The pool entry ``model`` names (None: the base, also when ``model`` is absent, as
    lm-eval's remote tokenizer sends none). An adapter not loaded yet is loaded, as a
    completion for it would be: its template decides how messages render."""
    if body.get("model") is None:
        return None
    adapter = state.adapter_for(principal, body["model"])
    if adapter is None:
        return None
    note(model=adapter)
    engine = local_engine(state, "tokenize")
    try:
        key = engine.load(adapter, timeout=LOAD_TIMEOUT_S)
    except TimeoutError:
        raise ApiError(504, f"loading {adapter!r} takes longer than {LOAD_TIMEOUT_S:.0f} s",
                       "server_error", "timeout") from None
    entry: PoolEntry = engine.host.entry(key)
    return entry


def _tokenize(state: ServerState, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
    for name in _UNSUPPORTED:
        if body.get(name) is not None:
            raise ApiError(400, f"unsupported field {name}: the adapter's own template is always used", param=name)
    add_special = get_field(body, "add_special_tokens", (bool,), False)
    want_strs = get_field(body, "return_token_strs", (bool,), False)
    has_prompt, has_messages = body.get("prompt") is not None, body.get("messages") is not None
    if has_prompt == has_messages:
        raise ApiError(400, "invalid request: send exactly one of prompt and messages", param="prompt")
    engine = local_engine(state, "/tokenize")
    host = engine.host
    if has_prompt:
        prompt = body["prompt"]
        if not isinstance(prompt, str):
            raise ApiError(400, "invalid prompt: expected a string", param="prompt")
        text = prompt
        entry = _entry(state, principal, body)  # checks the key may use the model (404)
    else:
        if get_field(body, "add_generation_prompt", (bool,), True) is not True:
            raise ApiError(400, "unsupported add_generation_prompt=false: messages always end in the "
                           "assistant's generation prompt, as /v1/chat/completions renders them",
                           param="add_generation_prompt")
        if get_field(body, "continue_final_message", (bool,), False):
            raise ApiError(400, "unsupported continue_final_message=true", param="continue_final_message")
        messages = messages_of(body)
        entry = _entry(state, principal, body)
        text = host.render(messages, entry)
    ids = [int(i) for i in host.tokenizer(text, add_special_tokens=add_special)["input_ids"]]
    out: dict[str, Any] = {"count": len(ids), "max_model_len": engine.max_model_len, "tokens": ids,
                           "token_strs": host.tokenizer.convert_ids_to_tokens(ids) if want_strs else None}
    return out


def _detokenize(state: ServerState, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
    tok = local_engine(state, "/detokenize").host.tokenizer
    _entry(state, principal, body)  # the same model check as /tokenize
    tokens = body.get("tokens")
    vocab = len(tok)
    if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        raise ApiError(400, "invalid tokens: expected a list of token ids", param="tokens")
    bad = next((t for t in tokens if not 0 <= t < vocab), None)
    if bad is not None:
        raise ApiError(400, f"invalid tokens: {bad} is not a token id (vocabulary of {vocab})", param="tokens")
    # Special tokens kept and spaces not "cleaned": lm-eval decodes context+continuation
    # ids back to text (tokenized_requests=False) and needs the text that encodes to them.
    text = tok.decode(tokens, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return {"prompt": str(text)}


def _token(tok: Any, name: str) -> str | None:
    value = getattr(tok, name, None)
    return str(value) if value is not None else None


def _info(state: ServerState, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
    engine = local_engine(state, "/tokenizer_info")
    tok = engine.host.tokenizer
    info: dict[str, Any] = {
        "tokenizer_class": type(tok).__name__,
        "eos_token": _token(tok, "eos_token"),
        "bos_token": _token(tok, "bos_token"),
        "pad_token": _token(tok, "pad_token"),
        "unk_token": _token(tok, "unk_token"),
        "chat_template": getattr(tok, "chat_template", None) or None,
        # The window this server enforces, not the tokenizer's nominal 1e30 default.
        "model_max_length": engine.max_model_len,
        "vocab_size": len(tok),
    }
    for name in _INFO_FIELDS:
        value = getattr(tok, name, None)
        if isinstance(value, (bool, int, str)):
            info[name] = value
    return info


async def tokenize(state: ServerState, request: HttpRequest) -> Response:
    return await _answer(state, request, "tokenize", _tokenize)


async def detokenize(state: ServerState, request: HttpRequest) -> Response:
    return await _answer(state, request, "detokenize", _detokenize)


async def tokenizer_info(state: ServerState, request: HttpRequest) -> Response:
    return await _answer(state, request, "tokenizer_info", _info, body=False)
