"""The hub's Starlette app: pages at ``/``, the JSON API at ``/api/v1``, CSS at ``/static``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from . import api, pages
from .state import HubState

STATIC = Path(__file__).with_name("static")


def build_app(state: HubState) -> Starlette:
    routes: list[BaseRoute] = [
        *api.routes(state),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        *pages.routes(state),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": {"status": exc.status_code, "message": exc.detail}}, status_code=exc.status_code)
        return pages.error_page(request, state, exc.status_code, str(exc.detail))

    async def crash(request: Request, exc: Exception) -> Response:
        # Never a traceback to the client; the server log has it (uvicorn logs the raise).
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": {"status": 500, "message": "internal error"}}, status_code=500)
        return pages.error_page(request, state, 500, "internal error")

    handlers: dict[Any, Any] = {HTTPException: http_error, Exception: crash}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.hub = state
    return app
