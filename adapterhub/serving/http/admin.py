"""``POST /v1/adapters/load`` and ``/v1/adapters/unload`` (admin keys only), through the
engine's single-flight :meth:`Engine.load` and :meth:`Engine.unload`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response

from adapterhub.access import note
from adapterhub.errors import AdapterhubError
from adapterhub.refs import adapter_name
from adapterhub.serving.http.errors import ApiError, api_error, not_found
from adapterhub.serving.http.parsing import ClientGone, read_json

if TYPE_CHECKING:
    from adapterhub.serving.http.state import ServerState

log = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 300.0


async def admin(state: ServerState, request: HttpRequest, action: str) -> Response:
    """Load (``action="load"``) or unload the adapter the body's ``model`` names."""
    ref: Any = None
    try:
        principal = state.principal(request)
        note(key=principal.name)
        if not principal.admin:
            raise ApiError(403, "this key may not load or unload adapters", "permission_error", "forbidden")
        body = await read_json(request, state.limits)
        ref = body.get("model", body.get("adapter"))
        if not isinstance(ref, str) or not ref:
            raise ApiError(400, "invalid model: expected the adapter reference", param="model")
        if state.is_base(ref):
            raise ApiError(400, "the base model is always loaded", param="model")
        if action == "load":
            key = await run_in_threadpool(_load, state, ref)
            result: dict[str, Any] = {"id": key, "loaded": True}
        else:
            removed = await run_in_threadpool(_unload, state, ref)
            result = {"unloaded": removed}
        state.metrics.requests.labels(action, "200", "-", principal.name).inc()
        note(adapter=result.get("id"))
        log.info("adapter %s by key %s", action, principal.name, extra={"fields": {"ref": ref, "result": result}})
        return JSONResponse(result)
    except ClientGone:
        return Response(status_code=499)
    except ApiError as e:
        state.metrics.requests.labels(action, str(e.status), "-", "-").inc()
        return e.response()
    except AdapterhubError as exc:
        err = api_error(exc, ref if isinstance(ref, str) else None)
        state.metrics.requests.labels(action, str(err.status), "-", "-").inc()
        return err.response()


def _load(state: ServerState, ref: str) -> str:
    try:
        return state.engine.load(ref, timeout=LOAD_TIMEOUT_S)
    except TimeoutError:
        raise ApiError(504, f"loading {ref!r} takes longer than {LOAD_TIMEOUT_S:.0f} s",
                       "server_error", "timeout") from None


def _unload(state: ServerState, ref: str) -> list[str]:
    names = state.engine.host.loaded()
    # An exact pool key unloads that one; a name (or a tag of it) every loaded version.
    name = adapter_name(ref)
    targets = [ref] if ref in names else [n for n in names if adapter_name(n) == name]
    if not targets:
        raise not_found(ref)
    for n in targets:
        state.engine.unload(n)
    return targets
