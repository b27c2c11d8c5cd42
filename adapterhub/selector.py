"""A reusable parameter/module selector: which parts of a base model a method may touch.

Any method can embed :class:`SelectorConfig` in its config (flat fields, so ``--set
layers=20-29`` works on the command line) and call :func:`select_parameters` or
:func:`select_modules` to limit its targets. Three independent filters, combined with
AND (an unset filter does not restrict):

* ``layers``: decoder-layer indices, ``"20-29"``, ``"0,3,5-7"`` or ``"5"``. A parameter
  has a layer index when its name contains ``layers.<i>.``, ``h.<i>.``, ``layer.<i>.``
  or ``blocks.<i>.`` (Llama/Mistral/Qwen, GPT-2/Falcon, BERT, ...). Parameters outside
  the layer stack (embeddings, final norm, lm_head) are excluded by a layer filter.
* ``modules``: name patterns, any of which may match (OR). A glob (``q_proj``,
  ``*_proj``, ``self_attn.*``) matches a parameter when it matches its full name, its
  module path, or any dotted suffix of either (so ``q_proj`` matches
  ``model.layers.0.self_attn.q_proj``). ``re:<regex>`` is a regular expression searched
  (``re.search``) in the parameter name and in its module path. A string is split on
  commas into several globs unless it starts with ``re:``.
* ``kinds``: parameter kinds, any of which may match (OR): ``bias`` (every ``*.bias``),
  ``norm`` (LayerNorm/RMSNorm-like modules, weight and bias), ``embedding``
  (``nn.Embedding``), ``attention`` / ``mlp`` (inside an attention / MLP block, norms
  excluded), ``lm_head`` (the output embeddings), ``all``.

Tied weights (e.g. SmolLM2's ``lm_head.weight`` is ``model.embed_tokens.weight``) are
one tensor: it is selected when any of its names matches, and reported once under its
canonical name, the first one ``model.named_parameters()`` yields.

An empty selection is a :class:`~adapterhub.errors.ConfigError`, so a typo in a pattern
never silently trains nothing.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapterhub.errors import ConfigError

if TYPE_CHECKING:  # method configs embed SelectorConfig and must load without torch
    import torch

ParamKind = Literal["bias", "norm", "embedding", "attention", "mlp", "lm_head", "all"]
PARAM_KINDS: tuple[str, ...] = get_args(ParamKind)

# The layer-stack container names used by common HF architectures; the index must be a
# whole dotted component so that e.g. "h.1" never matches inside "mh.12".
_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks)\.(\d+)(?:\.|$)")
_ATTENTION_PARTS = ("attn", "attention")
_MLP_PARTS = ("mlp", "feed_forward", "feedforward", "ffn")
_REGEX_PREFIX = "re:"


# --- layer ranges --------------------------------------------------------------------------
def parse_layers(spec: str | int | Sequence[int]) -> tuple[int, ...]:
    """Parse ``"20-29"`` / ``"0,3,5-7"`` / ``5`` / ``[1, 2]`` into sorted unique indices.

    Raises :class:`ConfigError` for negative indices, reversed ranges and bad syntax.
    """
    if isinstance(spec, bool):  # bool is an int; True is never a layer index
        raise ConfigError(f"layers: expected indices like '20-29' or '0,3,5-7', got {spec!r}")
    if isinstance(spec, int):
        parts: list[str] = [str(spec)]
    elif isinstance(spec, str):
        parts = [p.strip() for p in spec.split(",")]
    else:
        parts = []
        for item in spec:
            if isinstance(item, bool) or not isinstance(item, int):
                raise ConfigError(f"layers: expected integers, got {item!r} in {list(spec)!r}")
            parts.append(str(item))
    indices: set[int] = set()
    for part in parts:
        m = re.fullmatch(r"(-?\d+)(?:\s*-\s*(-?\d+))?", part)
        if not part or m is None:
            raise ConfigError(
                f"layers: cannot parse {part!r} in {spec!r}; use indices like '20-29' or '0,3,5-7'"
            )
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if lo < 0 or hi < 0:
            raise ConfigError(f"layers: negative layer index in {spec!r}; indices start at 0")
        if hi < lo:
            raise ConfigError(f"layers: reversed range {part!r} in {spec!r}; write it low-high")
        indices.update(range(lo, hi + 1))
    if not indices:
        raise ConfigError(f"layers: no layer index in {spec!r}")
    return tuple(sorted(indices))


def format_layers(indices: Iterable[int]) -> str:
    """The canonical compact form of a set of indices: ``[0, 3, 5, 6, 7]`` → ``"0,3,5-7"``."""
    out: list[str] = []
    run: list[int] = []
    for i in sorted(set(indices)):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def layer_index(name: str) -> int | None:
    """The decoder-layer index in a parameter or module name, or ``None`` outside the stack."""
    m = _LAYER_RE.search(name)
    return int(m.group(1)) if m else None


def num_layers(model: torch.nn.Module) -> int:
    """Number of decoder layers: ``config.num_hidden_layers`` (or ``n_layer``) when present,
    else one more than the largest index found in parameter names (0 when there is none)."""
    config = getattr(model, "config", None)
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    found = [layer_index(n) for n, _ in model.named_parameters()]
    ints = [i for i in found if i is not None]
    return max(ints) + 1 if ints else 0


# --- the config ------------------------------------------------------------------------------
class SelectorConfig(BaseModel):
    """Which parameters to select; embed it (inherit) in a method config.

    Every field defaults to "no restriction"; all three unset selects everything.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    layers: str | None = Field(
        default=None, description="Decoder-layer indices, e.g. '20-29' or '0,3,5-7' (stored in canonical form)."
    )
    modules: tuple[str, ...] | None = Field(
        default=None,
        description="Name patterns, any may match: globs ('q_proj', 'mlp.*') or 're:<regex>'; "
        "a string is split on commas unless it starts with 're:'.",
    )
    kinds: tuple[ParamKind, ...] | None = Field(
        default=None, description="Parameter kinds, any may match: " + ", ".join(PARAM_KINDS) + "."
    )

    @field_validator("layers", mode="before")
    @classmethod
    def _canonical_layers(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, (str, int, list, tuple)):
            try:
                return format_layers(parse_layers(value))
            except ConfigError as err:  # pydantic reports ValueError with the field name
                raise ValueError(str(err)) from None
        return value

    @field_validator("modules", mode="before")
    @classmethod
    def _split_modules(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value] if value.startswith(_REGEX_PREFIX) else value.split(",")
        if isinstance(value, (list, tuple)):
            patterns = tuple(str(p).strip() for p in value)
            if not patterns or any(not p for p in patterns):
                raise ValueError("modules: empty pattern")
            for p in patterns:
                if p.startswith(_REGEX_PREFIX):
                    try:
                        re.compile(p[len(_REGEX_PREFIX) :])
                    except re.error as err:
                        raise ValueError(f"modules: bad regular expression {p!r}: {err}") from None
            return patterns
        return value

    @field_validator("kinds", mode="before")
    @classmethod
    def _split_kinds(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",")]
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError(f"kinds: empty list; choose from {', '.join(PARAM_KINDS)}")
            bad = [v for v in value if v not in PARAM_KINDS]
            if bad:
                raise ValueError(f"kinds: unknown kind {bad[0]!r}; choose from {', '.join(PARAM_KINDS)}")
            return tuple(dict.fromkeys(value))  # de-duplicate, keep order
        return value

    def describe(self) -> str:
        """One line for messages: ``layers=20-29 modules=q_proj kinds=all``."""
        mods = ",".join(self.modules) if self.modules else "*"
        kinds = ",".join(self.kinds) if self.kinds else "all"
        return f"layers={self.layers or 'all'} modules={mods} kinds={kinds}"


# --- matching -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Alias:
    """One name of a (possibly tied) parameter and the module that owns it under that name."""

    name: str
    module_path: str
    module: torch.nn.Module


def _suffixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


def _matches_pattern(pattern: str, alias: _Alias) -> bool:
    if pattern.startswith(_REGEX_PREFIX):
        rx = re.compile(pattern[len(_REGEX_PREFIX) :])
        return bool(rx.search(alias.name) or (alias.module_path and rx.search(alias.module_path)))
    candidates = _suffixes(alias.name) + (_suffixes(alias.module_path) if alias.module_path else [])
    return any(fnmatch.fnmatchcase(c, pattern) for c in candidates)


def _is_norm(module: torch.nn.Module, module_path: str) -> bool:
    import torch

    if isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.RMSNorm)):
        return True
    leaf = module_path.rsplit(".", 1)[-1].lower()
    # LlamaRMSNorm, Qwen2RMSNorm, ... are plain Modules; GPT-2 names its norms ln_1/ln_f.
    return "norm" in type(module).__name__.lower() or "norm" in leaf or leaf.startswith("ln")


def _kind_matches(kind: str, alias: _Alias, output_module: torch.nn.Module | None) -> bool:
    leaf = alias.name.rsplit(".", 1)[-1]
    path_parts = alias.module_path.lower().split(".") if alias.module_path else []
    if kind == "all":
        return True
    if kind == "bias":
        return leaf == "bias"
    if kind == "norm":
        return _is_norm(alias.module, alias.module_path)
    if kind == "embedding":
        import torch

        return isinstance(alias.module, torch.nn.Embedding)
    if kind == "lm_head":
        return alias.module is output_module or alias.module_path == "lm_head"
    # Norms are their own kind: Llama's "post_attention_layernorm" is not attention.
    if kind == "attention":
        return not _is_norm(alias.module, alias.module_path) and any(
            p in part for part in path_parts for p in _ATTENTION_PARTS
        )
    if kind == "mlp":
        return not _is_norm(alias.module, alias.module_path) and any(
            p in part for part in path_parts for p in _MLP_PARTS
        )
    raise ConfigError(f"unknown parameter kind {kind!r}")  # unreachable after validation


def _output_module(model: torch.nn.Module) -> torch.nn.Module | None:
    import torch

    getter = getattr(model, "get_output_embeddings", None)
    if callable(getter):
        try:
            out = getter()
        except (AttributeError, NotImplementedError):
            return None
        return out if isinstance(out, torch.nn.Module) else None
    return None


def parameter_aliases(model: torch.nn.Module) -> dict[str, list[str]]:
    """Canonical parameter name → all its names (more than one only for tied weights)."""
    canonical: dict[int, str] = {}
    aliases: dict[str, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        first = canonical.setdefault(id(param), name)
        aliases.setdefault(first, []).append(name)
    return aliases


def _walk(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter, _Alias]]:
    """(canonical name, parameter, alias) for every name of every parameter, model order."""
    canonical: dict[int, str] = {}
    out: list[tuple[str, torch.nn.Parameter, _Alias]] = []
    for module_path, module in model.named_modules(remove_duplicate=False):
        for leaf, param in module.named_parameters(recurse=False):
            name = f"{module_path}.{leaf}" if module_path else leaf
            first = canonical.setdefault(id(param), name)
            out.append((first, param, _Alias(name, module_path, module)))
    return out


def _alias_selected(
    selector: SelectorConfig,
    alias: _Alias,
    layer_set: set[int] | None,
    output_module: torch.nn.Module | None,
) -> bool:
    if layer_set is not None:
        idx = layer_index(alias.name)
        if idx is None or idx not in layer_set:
            return False
    if selector.modules and not any(_matches_pattern(p, alias) for p in selector.modules):
        return False
    if selector.kinds and not any(_kind_matches(k, alias, output_module) for k in selector.kinds):
        return False
    return True


def _layer_set(model: torch.nn.Module, selector: SelectorConfig) -> set[int] | None:
    if selector.layers is None:
        return None
    wanted = parse_layers(selector.layers)
    total = num_layers(model)
    bad = [i for i in wanted if i >= total]
    if bad:
        last = f"0-{total - 1}" if total else "none"
        raise ConfigError(
            f"layers: index {bad[0]} is out of range; the model has {total} layers ({last})"
        )
    return set(wanted)


def select_parameters(model: torch.nn.Module, selector: SelectorConfig) -> list[str]:
    """Canonical names of the selected parameters, in model order, each tensor once.

    Raises :class:`ConfigError` when a layer index is out of range or nothing matches.
    """
    layer_set = _layer_set(model, selector)
    output_module = _output_module(model)
    chosen: dict[str, None] = {}
    order = {name: i for i, (name, _) in enumerate(model.named_parameters())}
    for canonical, _param, alias in _walk(model):
        if canonical not in chosen and _alias_selected(selector, alias, layer_set, output_module):
            chosen[canonical] = None
    if not chosen:
        raise ConfigError(f"selector matched no parameters ({selector.describe()})")
    return sorted(chosen, key=lambda n: order.get(n, len(order)))


def select_modules(
    model: torch.nn.Module,
    selector: SelectorConfig,
    *,
    types: tuple[type[torch.nn.Module], ...] | None = None,
) -> list[str]:
    """Paths of modules that directly own a selected parameter, in model order.

    ``types`` restricts to module classes (e.g. ``(torch.nn.Linear,)`` for LoRA targets).
    A tied parameter makes every module that owns it under a matching name count, so
    ``kinds=["lm_head"]`` gives ``["lm_head"]`` even when its weight is the embedding's.
    Raises :class:`ConfigError` when nothing matches.
    """
    layer_set = _layer_set(model, selector)
    output_module = _output_module(model)
    chosen: dict[str, None] = {}
    for _canonical, _param, alias in _walk(model):
        if types is not None and not isinstance(alias.module, types):
            continue
        if _alias_selected(selector, alias, layer_set, output_module):
            chosen[alias.module_path] = None
    if not chosen:
        what = f" of type {', '.join(t.__name__ for t in types)}" if types else ""
        raise ConfigError(f"selector matched no modules{what} ({selector.describe()})")
    return list(chosen)


__all__ = [
    "PARAM_KINDS",
    "ParamKind",
    "SelectorConfig",
    "format_layers",
    "layer_index",
    "num_layers",
    "parameter_aliases",
    "parse_layers",
    "select_modules",
    "select_parameters",
]
