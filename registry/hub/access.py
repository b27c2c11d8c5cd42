"""The hub's request log: a request id on every request, one access line each, every
failure with its traceback.

A pure ASGI wrapper around the whole app (outside Starlette's own error middleware), so

* streamed blob downloads pass through untouched (nothing is buffered: only the
  ``http.response.start`` message is looked at, to add the header and read the status);
* a crash is seen *after* Starlette has answered it with a 500, and logged here once,
  with the request id and the traceback, instead of by uvicorn without either.

The id is the caller's ``x-request-id`` when that is short and printable (so a proxy's
or a client's id follows the request through), else a fresh random one; it is returned
in the ``x-request-id`` header and put in the API's error bodies.

An access line names the caller by its token's *name* (:func:`note_caller`, called by
the handlers once they know who it is), never by the token, and carries no header,
query string or body: the path alone (adapter names are not secrets; nothing the hub
accepts as a credential travels in a URL).
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("adapterhub.registry.hub.access")

HEADER = "x-request-id"
MAX_ID_CHARS = 64
_ANONYMOUS = "-"


def valid_request_id(value: str) -> bool:
    """Short and printable ASCII, without spaces (safe in a header and on a log line)."""
    return 0 < len(value) <= MAX_ID_CHARS and all(33 <= ord(c) < 127 for c in value)


def request_id_of(request: Request) -> str | None:
    """The id :class:`AccessLog` gave this request (None outside it: a bare app in a test)."""
    rid = request.scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else None


def note_caller(request: Request, name: str | None) -> None:
    """Record who is calling, by token name, for the access line (None / anonymous: ``-``)."""
    request.scope.setdefault("state", {})["caller"] = name if name and name != "anonymous" else _ANONYMOUS


class AccessLog:
    """ASGI middleware: request id in and out, one access line, failures with tracebacks."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming_id(scope) or secrets.token_hex(8)
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        started = time.perf_counter()
        status = 0
        finished = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, finished
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)[HEADER] = rid
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Starlette has answered with a 500 (the crash handler) and re-raised so that
            # someone logs it: that is here, once, with the request id.
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"),
                          extra={"fields": {"request_id": rid}})
            if not finished:
                status = status or 500
                raise  # the answer is incomplete: the server must drop the connection
        finally:
            self._access(scope, state, rid, status or 500, started)

    @staticmethod
    def _access(scope: Scope, state: dict[str, Any], rid: str, status: int, started: float) -> None:
        fields = {
            "request_id": rid, "method": scope.get("method"), "path": scope.get("path"), "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            "token": state.get("caller", _ANONYMOUS),
        }
        level = logging.ERROR if status >= 500 else logging.INFO
        log.log(level, "%s %s %d", fields["method"], fields["path"], status, extra={"fields": fields})


def _incoming_id(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == b"x-request-id":
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError:
                return None
            return text if valid_request_id(text) else None
    return None
