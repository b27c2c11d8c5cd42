"""LoRA configuration and target-module resolution.

Target resolution is a pure function of (architecture, the base's linear layers,
config), so the training side, ``validate`` and the serving runtime always agree on which
modules an adapter touches, and a manifest that stores ``target_modules=None`` (the
per-architecture default) resolves the same way on every machine.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from adapterhub.errors import ConfigError
from adapterhub.protocols.method import MethodConfig
from adapterhub.selector import format_layers, layer_index, parse_layers

if TYPE_CHECKING:  # annotations only: the config is read without torch (`adapterhub methods`)
    import torch

ALL_LINEAR = "all-linear"

# Per-architecture defaults (the classic LoRA paper choice: query and value
# projections). Architectures not listed here default to every linear layer except the
# output embedding, which is the safe choice for an unknown layout.
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "v_proj"),
    "mixtral": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
    "qwen3": ("q_proj", "v_proj"),
    "gemma": ("q_proj", "v_proj"),
    "gemma2": ("q_proj", "v_proj"),
    "olmo": ("q_proj", "v_proj"),
    "olmo2": ("q_proj", "v_proj"),
    "phi3": ("qkv_proj",),
    "gpt_neox": ("query_key_value",),
}

_GLOB_CHARS = frozenset("*?[")


class LoraConfig(MethodConfig):
    """Hyper-parameters of one LoRA adapter (frozen; unknown keys are refused)."""

    r: int = Field(8, gt=0, le=4096, description="Rank of the update B @ A.")
    alpha: float = Field(16.0, gt=0, description="Scale numerator: the update is scaled by alpha / r.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA path only (training).")
    target_modules: tuple[str, ...] | Literal["all-linear"] | None = Field(
        None,
        description=(
            "Module name patterns (a component suffix such as 'q_proj' or "
            "'self_attn.q_proj', or a glob over the full path such as "
            "'model.layers.1*.mlp.*'), or 'all-linear'. None: the architecture's default."
        ),
    )
    layers: str | None = Field(
        None,
        description="Only adapt targets in these decoder layers ('20-29', '0,3,5-7'); None: all.",
    )
    init: Literal["kaiming", "gaussian"] = Field(
        "kaiming",
        description="Initialisation of A (B always starts at zero, so a fresh adapter is a no-op).",
    )

    @field_validator("target_modules", mode="before")
    @classmethod
    def _split_patterns(cls, value: Any) -> Any:
        # ``--set target_modules=q_proj,v_proj`` arrives as one string.
        if isinstance(value, str) and value != ALL_LINEAR:
            value = [p.strip() for p in value.split(",")]
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError("target_modules must name at least one module pattern")
            for p in value:
                if not isinstance(p, str) or not p.strip():
                    raise ValueError(f"target_modules holds an empty or non-string pattern: {p!r}")
            return tuple(p.strip() for p in value)
        return value

    @field_validator("layers", mode="before")
    @classmethod
    def _canonical_layers(cls, value: Any) -> Any:
        # The shared selector's syntax and canonical form (so manifests compare equal).
        if value is None:
            return None
        try:
            return format_layers(parse_layers(value))
        except ConfigError as err:
            raise ValueError(str(err)) from None

    @property
    def scaling(self) -> float:
        """The factor applied to B @ A x (never baked into stored weights)."""
        return self.alpha / self.r


@dataclass(frozen=True)
class LinearInfo:
    """What target resolution needs to know about one linear layer of the base."""

    path: str
    in_features: int
    out_features: int


def architecture_of(model: torch.nn.Module) -> str | None:
    """The Hugging Face ``model_type`` (``"llama"``), or None for a plain module."""
    cfg = getattr(model, "config", None)
    model_type = getattr(cfg, "model_type", None)
    return model_type if isinstance(model_type, str) else None


def output_embedding_paths(model: torch.nn.Module) -> frozenset[str]:
    """Paths of the output projection (lm_head), excluded from 'all-linear'."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if head is None:
        return frozenset({"lm_head"})
    return frozenset(name for name, mod in model.named_modules() if mod is head) | {"lm_head"}


def pattern_matches(pattern: str, path: str) -> bool:
    """Whether a target pattern selects the module at ``path`` (see LoraConfig)."""
    if path == pattern or path.endswith("." + pattern):
        return True
    return bool(_GLOB_CHARS & set(pattern)) and fnmatch.fnmatchcase(path, pattern)


def resolve_targets(
    config: LoraConfig,
    linears: Sequence[LinearInfo],
    architecture: str | None,
    excluded: Iterable[str] = ("lm_head",),
) -> list[LinearInfo]:
    """The linear layers ``config`` adapts, in model order; raise ConfigError if none.

    A pattern that selects no linear layer is an error naming it (a typo such as
    ``q_prj`` would otherwise silently train nothing on that module).
    """
    excluded = frozenset(excluded)
    patterns: tuple[str, ...] | str | None = config.target_modules
    if patterns is None:
        patterns = DEFAULT_TARGETS.get(architecture or "", ALL_LINEAR)
    if patterns == ALL_LINEAR:
        chosen = [li for li in linears if li.path not in excluded]
    else:
        assert isinstance(patterns, tuple)
        chosen = [li for li in linears if any(pattern_matches(p, li.path) for p in patterns)]
        for p in patterns:
            if not any(pattern_matches(p, li.path) for li in linears):
                raise ConfigError(
                    f"LoRA target pattern {p!r} matches no nn.Linear module of this "
                    f"{architecture or 'model'} (e.g. {', '.join(li.path for li in linears[:3])})"
                )
    if config.layers is not None:
        keep = set(parse_layers(config.layers))
        chosen = [li for li in chosen if layer_index(li.path) in keep]
    if not chosen:
        where = f" in layers {config.layers}" if config.layers is not None else ""
        raise ConfigError(f"LoRA config selects no linear layer of this {architecture or 'model'}{where}")
    return chosen


def expected_shapes(config: LoraConfig, targets: Sequence[LinearInfo]) -> dict[str, tuple[int, int]]:
    """Key -> shape of every tensor an adapter with ``config`` stores (the key convention)."""
    shapes: dict[str, tuple[int, int]] = {}
    for li in targets:
        shapes[f"{li.path}.lora_A"] = (config.r, li.in_features)
        shapes[f"{li.path}.lora_B"] = (li.out_features, config.r)
    return shapes
