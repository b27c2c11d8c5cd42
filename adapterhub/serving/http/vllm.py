"""vLLM's runtime adapter routes, as aliases of our admin routes (admin keys only).

* ``POST /v1/load_lora_adapter`` ``{"lora_name", "lora_path"}``: loads the adapter under
  ``lora_name`` (then ``model: <lora_name>`` serves it). ``lora_path`` is an adapter
  directory on the server or a registry reference (``team/x@1.0.0``), pulled through the
  server's registry and, under ``serve --require-signed``, its trust file.
* ``POST /v1/unload_lora_adapter`` ``{"lora_name"}``.

The answers are vLLM's, so its clients (scripts, KServe/AIBrix-style controllers) need no
change: 200 with vLLM's plain-text success line; 400 when a field is missing or the name
is already loaded (vLLM refuses a second load under a name; unload it first); 404 for an
unknown name on unload and for a reference the registry does not have; any other failed
load is a 400, as vLLM answers it (our own ``/v1/adapters/load`` says 422 for an adapter
that fails verification). Error bodies are vLLM's ``{"error": {"message", "type",
"param", "code"}}`` with the HTTP status as ``code``. Failures that are the server's
(registry down: 503, a load past its time: 504) keep their status.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, PlainTextResponse, Response

from adapterhub.access import note, request_id
from adapterhub.errors import AdapterhubError, SignatureError
from adapterhub.serving.http.errors import ApiError, api_error
from adapterhub.serving.http.parsing import ClientGone, read_json
from adapterhub.serving.http.tokenizer import local_engine

if TYPE_CHECKING:
    from adapterhub.serving.http.state import ServerState

log = logging.getLogger(__name__)

_TYPES = {400: "BadRequestError", 401: "AuthenticationError", 403: "PermissionDeniedError", 404: "NotFoundError"}


def _error(status: int, message: str, type_: str | None = None, param: str | None = None) -> JSONResponse:
    err: dict[str, Any] = {"message": message, "type": type_ or _TYPES.get(status, "InternalServerError"),
                           "param": param, "code": status}
    rid = request_id()
    if rid is not None:
        err["request_id"] = rid
    return JSONResponse({"error": err}, status_code=status)


def _name(body: dict[str, Any]) -> str:
    name = body.get("lora_name")
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "invalid lora_name: expected the name to serve the adapter under", "InvalidUserInput",
                       param="lora_name")
    return name


def _load(state: ServerState, name: str, path: str) -> str:
    engine = local_engine(state, "/v1/load_lora_adapter")  # a load under a chosen name: in-process pools only
    if name in engine.host.loaded():
        raise ApiError(400, f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput",
                       param="lora_name")
    trust = getattr(engine.adapters, "trust", None)
    directory: str | Path = path
    if not Path(path).is_dir():
        from adapterhub.registry.client import Registry

        # A registry reference: pulled (and, with a trust file, verified) by the same
        # registry the engine loads from, then loaded under the client's name.
        directory = Registry(engine.adapters.registry_url, progress=False).pull(path, trust=trust)
    elif trust is not None:
        raise SignatureError("serve --require-signed: lora_path must be a registry reference "
                             "(a directory carries no signature)")
    entry = engine.host.load(directory, name=name)
    return f"{entry.name}@{entry.version}" if entry.version else entry.name


async def vllm_admin(state: ServerState, request: HttpRequest, action: str) -> Response:
    """``action`` ``load`` or ``unload``, answered as vLLM answers it (see module docs)."""
    route = f"vllm_{action}"
    name: str | None = None
    subject: str | None = None  # what a 404 names: the reference for a load, the name for an unload
    try:
        principal = state.principal(request)
        note(key=principal.name)
        if not principal.admin:
            raise ApiError(403, "this key may not load or unload adapters", "PermissionDeniedError")
        body = await read_json(request, state.limits)
        name = subject = _name(body)
        if state.is_base(name):
            raise ApiError(400, f"{name!r} is the base model, always loaded", "InvalidUserInput", param="lora_name")
        if action == "load":
            path = body.get("lora_path")
            if not isinstance(path, str) or not path.strip():
                raise ApiError(400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput",
                               param="lora_path")
            subject = path
            loaded = await run_in_threadpool(_load, state, name, path)
            note(adapter=loaded)
            text = f"Success: LoRA adapter '{name}' added successfully."
        else:
            if name not in await run_in_threadpool(state.engine.host.loaded):
                raise ApiError(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError", param="lora_name")
            await run_in_threadpool(state.engine.unload, name)
            text = f"Success: LoRA adapter '{name}' removed successfully."
        state.metrics.requests.labels(route, "200", "-", principal.name).inc()
        log.info("adapter %s (vLLM route) by key %s", action, principal.name, extra={"fields": {"lora_name": name}})
        return PlainTextResponse(text)
    except ClientGone:
        return Response(status_code=499)
    except (ApiError, AdapterhubError) as exc:
        err = api_error(exc, subject)
        status = err.status
        if status == 422:  # verification/signature refusals: vLLM has no 422, its loads fail with 400
            status = 400
        type_ = err.type if err.type[:1].isupper() else None  # ours are snake_case: use vLLM's names
        state.metrics.requests.labels(route, str(status), "-", "-").inc()
        return _error(status, err.message, type_, "lora_path" if err.param == "model" else err.param)
