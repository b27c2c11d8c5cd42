"""The engine's limits as command-line flags, shared by every command that serves.

Each :class:`~adapterhub.serving.config.EngineConfig` field is a flag of the same name
(``--max-queue``...). The flags are declared from the plain table below, not from the
pydantic model, because every CLI invocation builds every command's parser and a
command such as ``adapterhub score`` must start without importing pydantic; a test
holds the table to the model's fields and defaults. ``--max-adapter-memory`` is the
host's device budget for resident adapters.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from adapterhub.errors import ConfigError

if TYPE_CHECKING:
    from adapterhub.serving.config import EngineConfig

# field: (type, default as shown, help)
FLAGS: dict[str, tuple[type, str, str]] = {
    "max_queue": (int, "256", "requests admitted but not yet decoding; a full queue refuses at once"),
    "max_running": (int, "32", "rows decoding at once, all adapters together"),
    "max_prefill_tokens": (int, "64 on CPU, 512 on an accelerator", "prompt tokens prefilled per engine step while rows are decoding; longer prompts are chunked"),
    "max_model_len": (int, "the base's context window", "prompt + max_tokens limit (at most the base's context window)"),
    "max_kv_tokens": (int, "131072", "sum over running rows of prompt + max_tokens that may be reserved"),
    "max_loaded_adapters": (int, "256", "adapters the engine keeps loaded from the registry; LRU beyond"),
    "resolve_ttl_s": (float, "1.0", "seconds a resolved tag/latest serves before it is re-resolved in the background; 0: before every request"),
    # A bool field is an off switch: --no-prefix-cache.
    "prefix_cache": (bool, "on", "reuse cached KV blocks of earlier prompts on the same adapter version (--no-prefix-cache: off)"),
    "prefix_block_tokens": (int, "16", "tokens per prefix-cache block"),
}


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("serving limits (see docs/serving.md)")
    for name, (kind, default, text) in FLAGS.items():
        if kind is bool:
            group.add_argument("--no-" + name.replace("_", "-"), dest=name, action="store_false", default=None, help=text)
            continue
        group.add_argument(
            "--" + name.replace("_", "-"), type=kind, default=None, metavar="N", help=f"{text} [default: {default}]"
        )
    group.add_argument(
        "--max-adapter-memory", type=float, default=None, metavar="MB",
        help="device memory for resident adapters; least recently used ones are evicted first [default: no limit]",
    )


def engine_config(args: argparse.Namespace) -> EngineConfig:
    """The ``EngineConfig`` the flags ask for (unset flags keep the library defaults)."""
    from pydantic import ValidationError

    from adapterhub.serving.config import EngineConfig

    values = {name: getattr(args, name) for name in FLAGS if getattr(args, name, None) is not None}
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
