"""The OpenAI-compatible HTTP API over one :class:`~adapterhub.serving.Engine` (Starlette).

Routes only translate: JSON into :class:`~adapterhub.serving.Request`, engine deltas into
OpenAI's response and chunk formats, engine errors into status codes. No model logic
lives here (see DESIGN.md, "Serving"). The modules beside this one each do one job:

- :mod:`.completions`: ``/v1/completions`` and ``/v1/chat/completions`` (SSE streaming);
- :mod:`.models`: ``/v1/models``; :mod:`.admin`: adapter load/unload;
- :mod:`.tokenizer`: vLLM's ``/tokenize``, ``/detokenize``, ``/tokenizer_info``;
  :mod:`.vllm`: vLLM's ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``;
- :mod:`.parsing`: request bodies; :mod:`.formatting`: OpenAI's wire formats;
- :mod:`.errors`: errors to statuses; :mod:`.state`: auth, ``model`` resolution, limits;
- :mod:`adapterhub.access` (shared with the hub): request ids, access lines, crash logs,
  the event loop's lag.

``model`` picks the adapter: a pool name, a registry reference (``team/x``,
``team/x@1.0.0``, ``team/x:stable``) or the base alias (no adapter).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapterhub.access import AccessLog, note
from adapterhub.serving.http.admin import admin
from adapterhub.serving.http.completions import complete
from adapterhub.serving.http.errors import ApiError, internal_error
from adapterhub.serving.http.keys import KeyRing
from adapterhub.serving.http.metrics import CONTENT_TYPE
from adapterhub.serving.http.models import list_models
from adapterhub.serving.http.state import HttpLimits, ServerState
from adapterhub.serving.http.tokenizer import detokenize, tokenize, tokenizer_info
from adapterhub.serving.http.vllm import vllm_admin

if TYPE_CHECKING:
    from adapterhub.serving.http.backend import EngineLike

__all__ = ["ApiError", "HttpLimits", "ServerState", "create_app"]


def create_app(
    engine: EngineLike, *, base_alias: str | None = None, keys: KeyRing | None = None, registry_url: str | None = None,
    limits: HttpLimits | None = None,
) -> Starlette:
    """The ASGI app serving ``engine`` (started here if it is not yet)."""
    state = ServerState(engine, base_alias or engine.host.base.name, keys, registry_url, limits or HttpLimits())

    async def completions(request: HttpRequest) -> Response:
        return await complete(state, request, "completions")

    async def chat(request: HttpRequest) -> Response:
        return await complete(state, request, "chat")

    async def health(request: HttpRequest) -> Response:
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if not state.engine.healthy:
            return JSONResponse({"status": "unhealthy", "base": state.base_alias}, status_code=503)
        return JSONResponse({"status": "ok", "base": state.base_alias})

    async def metrics(request: HttpRequest) -> Response:
        # With keys, only an admin key may scrape: labels name adapters and keys.
        try:
            principal = state.principal(request)
            note(key=principal.name)
            if not principal.admin:
                raise ApiError(403, "only an admin key may read the metrics", "permission_error", "forbidden")
        except ApiError as e:
            return e.response()
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    async def models(request: HttpRequest) -> Response:
        try:
            principal = state.principal(request)
            note(key=principal.name)
            return JSONResponse(await run_in_threadpool(list_models, state, principal, request.query_params))
        except ApiError as e:
            return e.response()

    async def load(request: HttpRequest) -> Response:
        return await admin(state, request, "load")

    async def unload(request: HttpRequest) -> Response:
        return await admin(state, request, "unload")

    async def vllm_load(request: HttpRequest) -> Response:
        return await vllm_admin(state, request, "load")

    async def vllm_unload(request: HttpRequest) -> Response:
        return await vllm_admin(state, request, "unload")

    async def tokenize_route(request: HttpRequest) -> Response:
        return await tokenize(state, request)

    async def detokenize_route(request: HttpRequest) -> Response:
        return await detokenize(state, request)

    async def tokenizer_info_route(request: HttpRequest) -> Response:
        return await tokenizer_info(state, request)

    async def not_found_route(request: HttpRequest, exc: Exception) -> Response:
        return ApiError(404, f"no route {request.method} {request.url.path}", code="not_found").response()

    async def bad_method(request: HttpRequest, exc: Exception) -> Response:
        return ApiError(405, f"method {request.method} not allowed on {request.url.path}").response()

    routes = [
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/adapters/load", load, methods=["POST"]),
        Route("/v1/adapters/unload", unload, methods=["POST"]),
        Route("/v1/load_lora_adapter", vllm_load, methods=["POST"]),
        Route("/v1/unload_lora_adapter", vllm_unload, methods=["POST"]),
        Route("/tokenize", tokenize_route, methods=["POST"]),
        Route("/detokenize", detokenize_route, methods=["POST"]),
        Route("/tokenizer_info", tokenizer_info_route, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    # AccessLog is the outermost layer we own: it logs and answers any exception a route
    # did not handle (500 with the request id), so no crash handler is needed here.
    app = Starlette(routes=routes, exception_handlers={404: not_found_route, 405: bad_method},
                    middleware=[Middleware(AccessLog, logger="adapterhub.serving.http.access", answer_crashes=True,
                                           error_body=lambda: internal_error().body(), lag=state.lag)])
    app.state.server = state
    engine.start()
    return app
