"""Request ids, one access line per request and every crash logged: for ``serve`` and the hub.

A pure ASGI middleware (so a stream or a blob download passes through unbuffered):

* every request gets an id: an incoming ``x-request-id`` if it is short and printable
  (a proxy's or a client's own, so their logs join ours), else a fresh one. It is sent
  back in the ``x-request-id`` header of every response, and :func:`request_id` (a
  context variable that route threads inherit) gives it to error bodies and to the
  engine, so engine log lines name it too;
* the routes add what they know to the request's :class:`AccessRecord` with :func:`note`
  (the caller's key or token *name*, the adapter ``name@version``, tokens, time to first
  token); one line is logged when the response ends, or when the client leaves;
* an exception no route handled is logged once, with its traceback and the request id.
  Where the middleware sits inside Starlette's error handling (``serve``) it also
  answers the 500 itself, a JSON body with the id (never the traceback); where it wraps
  the whole app (the hub, whose 500 is an HTML page or JSON by path), Starlette has
  answered and the middleware only logs;
* :class:`LoopLag`, a probe task, measures how late the event loop wakes: the number
  that says whether anything blocks it (``serve`` exports it in ``/metrics``).

Nothing here logs a header value or a query string: credentials travel in
``Authorization`` only. Layering: Starlette types only, no engine, no registry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
MAX_ID_CHARS = 128
_VALID_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}\Z")  # MAX_ID_CHARS
_current: ContextVar[AccessRecord | None] = ContextVar("adapterhub_access", default=None)


@dataclass
class AccessRecord:
    """What the access line of one request says; routes fill in what they learn."""

    request_id: str
    method: str
    path: str
    started: float = field(default_factory=time.perf_counter)
    status: int = 0
    fields: dict[str, Any] = field(default_factory=dict)

    def note(self, **values: Any) -> None:
        self.fields.update({k: v for k, v in values.items() if v is not None})


def current() -> AccessRecord | None:
    return _current.get()


def request_id() -> str | None:
    """The id of the request being handled in this context (None outside a request)."""
    rec = _current.get()
    return None if rec is None else rec.request_id


def note(**values: Any) -> None:
    """Add fields to the current request's access line (no-op outside a request)."""
    rec = _current.get()
    if rec is not None:
        rec.note(**values)


def valid_request_id(text: str) -> bool:
    """An id we keep: anything else (spaces, newlines, 1 kB of junk) could forge log lines."""
    return bool(_VALID_ID.match(text))


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError:
                return None
            return text if valid_request_id(text) else None
    return None


class LoopLag:
    """How late the event loop runs a callback that should run every ``interval_s``.

    A handler that blocks the loop for 200 ms makes the next probe wake ~200 ms late:
    that lateness is what every other stream on the server waits too.
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.max_s = 0.0
        self.samples = 0
        self.observers: list[Any] = []  # callables taking one lag in seconds (metrics)
        self._task: asyncio.Task[None] | None = None

    def ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._probe(), name="adapterhub-loop-lag")

    def reset(self) -> float:
        """The largest lag since the last reset (and start over)."""
        worst, self.max_s = self.max_s, 0.0
        return worst

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(self.interval_s)
            lag = max(0.0, loop.time() - t0 - self.interval_s)
            self.max_s = max(self.max_s, lag)
            self.samples += 1
            for observe in self.observers:
                observe(lag)


class AccessLog:
    """The middleware (see module docs).

    ``logger``: where access lines go (``<app>.access``); crashes go to its parent.
    ``answer_crashes``: answer an unhandled exception with a JSON 500 (``error_body``
    builds it, in the request's context so it can read :func:`request_id`); otherwise
    re-raise it after logging, for the error middleware outside or the server.
    ``lag``: a :class:`LoopLag` to keep running while requests come.
    ``defaults``: fields every access line has unless a route noted its own (``token="-"``).
    """

    def __init__(self, app: ASGIApp, *, logger: str, answer_crashes: bool = False,
                 error_body: Callable[[], dict[str, Any]] | None = None, lag: LoopLag | None = None,
                 defaults: dict[str, Any] | None = None) -> None:
        self.app = app
        self.defaults = dict(defaults or {})
        self.log = logging.getLogger(logger)
        self.crash_log = logging.getLogger(logger.rpartition(".")[0] or logger)
        self.answer_crashes = answer_crashes
        self.error_body = error_body or (lambda: {"error": {"message": "internal error", "request_id": request_id()}})
        self.lag = lag

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.lag is not None:
            self.lag.ensure_running()
        rid = _incoming_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        record = AccessRecord(rid, scope.get("method", "-"), scope.get("path", "-"))
        token = _current.set(record)
        started = finished = False

        async def send_with_id(message: Message) -> None:
            nonlocal started, finished
            if message["type"] == "http.response.start":
                started = True
                record.status = int(message["status"])
                message = {**message, "headers": [*message.get("headers", []), (HEADER.encode(), rid.encode())]}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            self.crash_log.exception("unhandled error in %s %s", record.method, record.path,
                                     extra={"fields": {"request_id": rid}})
            if not self.answer_crashes:
                record.status = record.status or 500
                if not finished:
                    raise  # the answer is incomplete: the server must drop the connection
                return  # answered in full (Starlette's 500) and logged: nobody need log it again
            record.status = 500
            if not started:
                body = json.dumps(self.error_body()).encode()
                await send({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (HEADER.encode(), rid.encode())]})
                await send({"type": "http.response.body", "body": body})
        finally:
            _current.reset(token)
            self._line(record, started)

    def _line(self, record: AccessRecord, started: bool) -> None:
        # A route's own verdict wins: a stream answered 200 may end as 499 (client left)
        # or with an error event; a request whose client left before any answer is 499.
        status = record.fields.pop("status", record.status if started else (record.status or 499))
        level = logging.ERROR if status >= 500 else logging.INFO
        fields = {"request_id": record.request_id, "method": record.method, "path": record.path, "status": status,
                  **self.defaults, **record.fields, "total_ms": round((time.perf_counter() - record.started) * 1000.0, 1)}
        self.log.log(level, "%s %s %s", record.method, record.path, status, extra={"fields": fields})
