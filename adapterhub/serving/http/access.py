"""Request ids, one access line per request, every crash logged, and the event loop's lag.

A pure ASGI middleware (so a stream passes through unbuffered) around the whole app:

* every request gets an id: an incoming ``x-request-id`` if it is short and printable
  (a proxy's or a client's own, so their logs join ours), else a fresh one. It is sent
  back in the ``x-request-id`` header of every response, put in every error body (via
  :func:`request_id`, a context variable the routes' threads inherit), and given to the
  engine as the request's id so engine log lines name it too;
* the routes add what they know to the request's :class:`AccessRecord` (key *name*,
  adapter ``name@version``, tokens, time to first token); one line is logged when the
  response ends, or when the client leaves;
* an exception no route handled is logged with its traceback and the request id, and
  the client gets a 500 JSON body with that id (never the traceback);
* a probe task measures how late the event loop wakes (:class:`LoopLag`), the number
  that says whether anything blocks it, exported in ``/metrics``.

Nothing here logs a header value: keys travel in ``Authorization`` only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("adapterhub.serving.http.access")
crash_log = logging.getLogger("adapterhub.serving.http")

HEADER = "x-request-id"
_VALID_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}\Z")
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


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError:
                return None
            # Anything else (spaces, newlines, 1 kB of junk) could forge log lines.
            return text if _VALID_ID.match(text) else None
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
    """The middleware (see module docs). ``lag`` is shared with the app's metrics."""

    def __init__(self, app: ASGIApp, lag: LoopLag | None = None) -> None:
        self.app = app
        self.lag = lag

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.lag is not None:
            self.lag.ensure_running()
        rid = _incoming_id(scope) or uuid.uuid4().hex
        record = AccessRecord(rid, scope.get("method", "-"), scope.get("path", "-"))
        token = _current.set(record)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                record.status = int(message["status"])
                message = {**message, "headers": [*message.get("headers", []), (HEADER.encode(), rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            record.status = 500
            crash_log.exception("unhandled error", extra={"fields": {"request_id": rid, "path": record.path}})
            if not started:
                # errors imports this module: a late import
                from adapterhub.serving.http.errors import internal_error

                body = json.dumps(internal_error().body()).encode()  # still in this request's context: has its id
                await send({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (HEADER.encode(), rid.encode())]})
                await send({"type": "http.response.body", "body": body})
        finally:
            _current.reset(token)
            self._line(record, started)

    @staticmethod
    def _line(record: AccessRecord, started: bool) -> None:
        # A route's own verdict wins: a stream answered 200 may end as 499 (client left)
        # or with an error event; a request whose client left before any answer is 499.
        status = record.fields.pop("status", record.status if started else 499)
        level = logging.ERROR if status >= 500 else logging.INFO
        fields = {"request_id": record.request_id, "method": record.method, "path": record.path, "status": status,
                  **record.fields, "total_ms": round((time.perf_counter() - record.started) * 1000.0, 1)}
        log.log(level, "%s %s %s", record.method, record.path, status, extra={"fields": fields})
