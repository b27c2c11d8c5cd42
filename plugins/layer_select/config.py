"""``LayerSelectiveConfig``: which base parameters a ``layer-selective`` adapter trains.

Its own module, free of torch, so the config (and its JSON schema in ``adapterhub
methods --json``) loads without the method's implementation.
"""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from adapterhub.protocols.method import MethodConfig
from adapterhub.selector import SelectorConfig


class LayerSelectiveConfig(SelectorConfig, MethodConfig):
    """Which base parameters train: layers AND modules AND kinds (unset: no restriction;
    nothing set at all: kinds=['norm'])."""

    @model_validator(mode="before")
    @classmethod
    def _default_selection(cls, data: Any) -> Any:
        # Selecting everything would be full fine-tuning stored as an "adapter"; an
        # explicit default keeps the manifest self-describing (kinds=["norm"] is written).
        if isinstance(data, dict) and all(data.get(k) is None for k in ("layers", "modules", "kinds")):
            return {**data, "kinds": ["norm"]}
        return data


__all__ = ["LayerSelectiveConfig"]
