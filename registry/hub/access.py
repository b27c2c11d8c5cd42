"""The hub's request log: the shared access log (:mod:`adapterhub.access`) around the whole app.

It wraps the app from outside Starlette's own error handling, so a crash is seen after
Starlette has answered it (an HTML error page or API JSON, by path, both with the request
id) and is logged here once, with the traceback. Access lines go to
``adapterhub.registry.hub.access`` and name the caller by its token's *name*
(:func:`note_caller`, called by the handlers once they know who it is), never by the
token; they carry the path alone, no header, query string or body.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp

from adapterhub.access import MAX_ID_CHARS, AccessLog, note, request_id

__all__ = ["LOGGER", "MAX_ID_CHARS", "access_log", "note_caller", "request_id_of"]

LOGGER = "adapterhub.registry.hub.access"
_ANONYMOUS = "-"


def access_log(app: ASGIApp) -> ASGIApp:
    return AccessLog(app, logger=LOGGER, defaults={"token": _ANONYMOUS})


def request_id_of(request: Request) -> str | None:
    """The id the access log gave this request (None outside it: a bare app in a test)."""
    rid = request.scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else request_id()


def note_caller(request: Request, name: str | None) -> None:
    """Record who is calling, by token name, for the access line (None / anonymous: ``-``)."""
    note(token=name if name and name != "anonymous" else _ANONYMOUS)
