"""The engine's limits as command-line flags, shared by every command that serves.

Each :class:`EngineConfig` field is a flag with the same name (``--max-queue``...),
help text and default taken from the field itself, so the CLI can never drift from the
library. ``--max-adapter-memory`` is the host's device budget for resident adapters.
"""

from __future__ import annotations

import argparse
from typing import Any

from adapterhub.errors import ConfigError
from adapterhub.serving.config import EngineConfig

_SKIP = {"loader_threads"}  # an internal knob, not a limit an operator tunes


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("serving limits (see docs/serving.md)")
    for name, field in EngineConfig.model_fields.items():
        if name in _SKIP:
            continue
        kind: Any = float if field.annotation is float else int
        default = "base's window" if name == "max_model_len" else field.default
        text = str(field.description)
        if name == "max_prefill_tokens":
            default = "64 on CPU, 512 on an accelerator"
            text = text.split("; None:")[0]
        group.add_argument(
            "--" + name.replace("_", "-"), type=kind, default=None, metavar="N",
            help=f"{text} [default: {default}]",
        )
    group.add_argument(
        "--max-adapter-memory", type=float, default=None, metavar="MB",
        help="device memory for resident adapters; least recently used ones are evicted first [default: no limit]",
    )


def engine_config(args: argparse.Namespace) -> EngineConfig:
    """The :class:`EngineConfig` the flags ask for (unset flags keep the defaults)."""
    values = {
        name: getattr(args, name) for name in EngineConfig.model_fields
        if name not in _SKIP and getattr(args, name, None) is not None
    }
    from pydantic import ValidationError

    try:
        return EngineConfig(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        flag = "--" + str(err["loc"][0]).replace("_", "-") if err.get("loc") else "option"
        raise ConfigError(f"invalid {flag}: {err['msg']}") from None


def adapter_budget_bytes(args: argparse.Namespace) -> int | None:
    mb = getattr(args, "max_adapter_memory", None)
    if mb is None:
        return None
    if mb <= 0:
        raise ConfigError("invalid --max-adapter-memory: must be > 0 MB")
    return int(mb * 1024 * 1024)
