"""Serving: the continuous-batching engine over one ``AdapterHost`` (no HTTP here).

Exports resolve lazily so that importing the package (e.g. from a CLI plugin module)
does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapterhub.serving.config import EngineConfig
    from adapterhub.serving.engine import Engine
    from adapterhub.serving.handle import RequestHandle
    from adapterhub.serving.request import (
        Completion,
        Delta,
        Message,
        Request,
        SamplingParams,
        TokenLogprob,
        make_request,
    )

__all__ = [
    "Completion", "Delta", "Engine", "EngineConfig", "Message", "Request", "RequestHandle",
    "SamplingParams", "TokenLogprob", "make_request",
]

_HOMES = {
    "Engine": "engine", "EngineConfig": "config", "RequestHandle": "handle",
    "Completion": "request", "Delta": "request", "Message": "request", "Request": "request",
    "SamplingParams": "request", "TokenLogprob": "request", "make_request": "request",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'adapterhub.serving' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"adapterhub.serving.{home}"), name)
