"""The hub's Starlette app: pages at ``/``, the JSON API at ``/api/v1``, CSS at ``/static``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from . import api, pages
from .access import access_log, request_id_of
from .state import HubState

STATIC = Path(__file__).with_name("static")


def build_app(state: HubState) -> ASGIApp:
    """The hub as one ASGI app: Starlette's routes inside the access log (:mod:`.access`)."""
    routes: list[BaseRoute] = [
        *api.routes(state),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        *pages.routes(state),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if request.url.path.startswith("/api/"):
            return api.error_response(exc.status_code, "http_error", str(exc.detail), dict(exc.headers or {}), request_id_of(request))
        return pages.error_page(request, state, exc.status_code, str(exc.detail))

    async def crash(request: Request, exc: Exception) -> Response:
        # Never a traceback to the client. The access log middleware around this app logs
        # it, once, with the request id (Starlette re-raises it after this answer).
        # The x-request-id header is added on the way out, as on every answer.
        rid = request_id_of(request)
        if request.url.path.startswith("/api/"):
            return api.error_response(500, "internal", "internal error", None, rid)
        return pages.error_page(request, state, 500, "internal error" + (f" (request id {rid})" if rid else ""))

    handlers: dict[Any, Any] = {HTTPException: http_error, Exception: crash}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.hub = state
    return access_log(app)
