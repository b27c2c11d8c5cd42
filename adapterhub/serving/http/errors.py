"""Engine and registry errors as OpenAI-style error bodies with the right HTTP status.

Every error a client can cause ends here as ``{"error": {"message", "type", "code",
"param"}}``; nothing a client sends may produce a 500 with a stack trace.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.responses import JSONResponse

from adapterhub.access import request_id
from adapterhub.errors import (
    AdapterhubError,
    AdapterNotFoundError,
    AdapterUnloadedError,
    ArtifactError,
    ConfigError,
    ContextLengthError,
    EngineClosedError,
    IncompatibleAdapterError,
    InvalidNameError,
    QueueFullError,
    ReplicaUnavailableError,
    SignatureError,
    StoreError,
)

log = logging.getLogger("adapterhub.serving.http")

RETRY_AFTER_S = 1


class ApiError(Exception):
    """An error the client gets as ``{"error": {...}}`` with ``status``."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code, "param": self.param}
        rid = request_id()
        if rid is not None:  # what an operator greps the server log for
            err["request_id"] = rid
        return {"error": err}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def _msg(exc: BaseException) -> str:
    # KeyError subclasses quote their str(); the first argument is the message.
    return " ".join(str(exc.args[0] if exc.args else exc).split())


def api_error(exc: BaseException, model: str | None = None) -> ApiError:
    """The status and OpenAI error body for an engine/registry error."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, (AdapterNotFoundError, InvalidNameError, AdapterUnloadedError)):
        return not_found(model)
    if isinstance(exc, ContextLengthError):
        return ApiError(400, _msg(exc), code="context_length_exceeded", param="messages")
    if isinstance(exc, QueueFullError):
        return ApiError(429, _msg(exc), "rate_limit_error", "queue_full", headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, SignatureError):  # serve --require-signed refused it; nothing was loaded
        return ApiError(422, f"adapter {model!r} refused: {_msg(exc)}", "invalid_request_error", "adapter_unsigned", "model")
    if isinstance(exc, (ArtifactError, IncompatibleAdapterError)):
        return ApiError(422, f"adapter {model!r} failed verification: {_msg(exc)}", "invalid_request_error",
                        "adapter_invalid", "model")
    if isinstance(exc, ConfigError):
        text = _msg(exc)
        param = text.removeprefix("invalid ").split(":", 1)[0].split(".")[-1] if text.startswith("invalid ") else None
        return ApiError(400, text, param=param)
    if isinstance(exc, EngineClosedError):
        return shutting_down()
    if isinstance(exc, ReplicaUnavailableError):  # serve --ray: retrying may reach a live replica
        return ApiError(503, _msg(exc), "server_error", "replica_unavailable",
                        headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, StoreError):
        log.warning("registry unavailable: %s", _msg(exc), extra={"fields": {"request_id": request_id()}})
        return ApiError(503, f"the registry is unavailable: {_msg(exc)}", "server_error", "registry_unavailable")
    if isinstance(exc, AdapterhubError):
        return ApiError(400, _msg(exc))
    # Not a client's doing: the traceback goes to the log, the client gets the id only.
    log.error("request failed", exc_info=exc, extra={"fields": {"request_id": request_id(), "model": model}})
    return internal_error()


def not_found(model: str | None) -> ApiError:
    # Same answer for a missing adapter and one the key may not use: no existence leak.
    return ApiError(404, f"The model {model!r} does not exist or you do not have access to it.",
                    code="model_not_found", param="model")


def shutting_down() -> ApiError:
    return ApiError(503, "the server is shutting down", "server_error", "shutting_down")


def internal_error() -> ApiError:
    return ApiError(500, "internal error", "server_error", "internal_error")
