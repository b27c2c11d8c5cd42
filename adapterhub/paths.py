"""Where adapterhub keeps things on disk (all overridable by environment variables)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """``ADAPTERHUB_HOME`` (default ``~/.cache/adapterhub``): registry, caches, config."""
    env = os.environ.get("ADAPTERHUB_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "adapterhub"


def model_cache_dir() -> Path:
    """Converted base models (``ADAPTERHUB_MODEL_CACHE``, default ``$ADAPTERHUB_HOME/models``).

    Kept separately overridable so tests can use a throw-away home while sharing the
    one-time GGUF→safetensors conversion of the packaged model.
    """
    env = os.environ.get("ADAPTERHUB_MODEL_CACHE")
    return Path(env).expanduser() if env else home() / "models"


def registry_dir() -> Path:
    """The local adapter registry (the default store)."""
    return home() / "registry"


def eval_cache_dir() -> Path:
    """Cached base-model evaluation outputs."""
    return home() / "eval-cache"


def config_file() -> Path:
    """User configuration (remotes), TOML-free JSON for zero dependencies."""
    return home() / "config.json"
