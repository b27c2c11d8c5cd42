"""Every limit of the serving engine: a name, a default, a CLI flag, a clear error when hit.

Nothing in the engine grows without bound: waiting requests are capped by
``max_queue`` (a full queue refuses at once), decoding rows by ``max_running``, the KV
cache by ``max_running`` × (``max_model_len`` + prefix), loaded adapters by
``max_loaded_adapters`` (and their device memory by the host's budget).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EngineConfig(BaseModel):
    """Limits and policies of one :class:`~adapterhub.serving.Engine`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_queue: int = Field(default=256, ge=1, description="requests admitted but not yet decoding")
    max_running: int = Field(default=32, ge=1, description="rows decoding at once, all adapters together")
    max_prefill_tokens: int | None = Field(
        default=None,
        ge=1,
        description=(
            "prompt tokens prefilled per engine step while rows are decoding; longer prompts are chunked; "
            "None: 64 on CPU, 512 on an accelerator"
        ),
    )
    max_model_len: int | None = Field(
        default=None, ge=2, description="prompt + max_tokens limit (at most the base's context window)"
    )
    max_kv_tokens: int = Field(
        default=131072, ge=1, description="sum over running rows of prompt + max_tokens that may be reserved"
    )
    prefix_cache: bool = Field(
        default=True,
        description=(
            "keep finished prompts' KV blocks, keyed by adapter name@version and token ids, and reuse them for "
            "later prompts that start the same way (multi-turn chat); the blocks share max_kv_tokens with running rows"
        ),
    )
    prefix_block_tokens: int = Field(default=16, ge=1, le=1024, description="tokens per prefix-cache block")
    max_loaded_adapters: int = Field(
        default=256, ge=1, description="adapters the engine keeps loaded from the registry; LRU beyond"
    )
    loader_threads: int = Field(default=2, ge=1, le=16, description="threads pulling and verifying adapters")
    resolve_ttl_s: float = Field(
        default=1.0,
        ge=0.0,
        description=(
            "a resolved tag/latest older than this is re-resolved in the background while the loaded "
            "version keeps serving; 0: resolve before every request"
        ),
    )
