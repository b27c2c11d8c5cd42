"""The PEFT method protocol: training-side and serving-side.

A method is designed for two lives:

* **Training** (``attach`` / ``load``): the method modifies a frozen base in place so
  that only its own parameters require grad, and gives back a :class:`TrainableAdapter`
  that can export exactly the tensors stored in ``adapter.safetensors`` and can
  ``detach`` to give the base back bit for bit.

* **Serving** (``runtime``): the host builds one :class:`MethodRuntime` per method on
  its one frozen base. The runtime makes adapters *resident* beside the base
  (``plan`` then ``apply``) and *selects* them per request row (``route``). This is what
  makes a swap a constant-time switch and lets one batch serve rows with different
  adapters:

  - reparameterization (LoRA): ``prepare`` wraps target linears once with
    multi-adapter layers holding stacked A/B weights; ``route`` sets a per-row index
    tensor, and the layers apply a gathered batched matmul. ``mixed_batch=True``.
  - additive (prefix tuning): resident prefixes are stacked key/value tensors;
    ``route`` builds per-row past key/values and extends the attention mask
    (rows with no prefix get masked-out slots). ``mixed_batch=True``.
  - selective (layer-selective): the adapter *replaces* base tensors, so one batch can
    only hold one such adapter; ``route`` copies the adapter's tensors into the
    existing base parameters (saving the originals once) and restores them on exit.
    ``mixed_batch=False``: the host groups rows into sub-batches per adapter.

  **Route lifetime (changed for the serving engine).** ``route`` is entered around
  *every* forward of a row, not once per generation: the row's first forward (its
  cache is empty) and each forward that continues it (a decode step, a later prefill
  chunk), which brings the cache, the mask the first route yielded plus one column per
  new token, and positions continuing from the last one used. State that lives in the
  cache (prefix tuning's virtual tokens) is added on the first forward only: on a
  continuing forward an additive runtime passes the inputs through. Per-row selection
  state (LoRA's slot index, IA³'s vectors) is set on every forward, since the rows of a
  continuous batch change between steps. The conformance check ``route_decode``
  (``adapterhub.testing.methods``) holds every runtime to this.

  **Packed forwards (optional, added with the engine's one-forward-per-step).** The
  serving engine runs one forward per step over *many* requests' tokens laid end to end
  in a single sequence (batch 1): every decoding row's next token and the step's prompt
  chunks (SARATHI-style chunked prefill piggybacked on decode). Attention keeps each
  request to its own cache (``adapterhub.host.packed``), so a runtime only has to route
  *tokens*, not rows. A runtime opts in by also implementing :class:`PackedRuntime`:
  ``route_tokens`` gets :class:`TokenSpan` s (an adapter id, or None, for each
  contiguous run of tokens) and ``initial_kv`` says what a request's cache starts with
  before its first token (prefix tuning's virtual tokens; None for most methods). A
  runtime without it keeps working: rows on it are served by per-row forwards, as before
  (the IA³ example in ``examples/`` is such a runtime). The conformance check
  ``route_tokens`` holds a packed runtime to this: a packed forward over several
  requests on different adapters equals each request run alone.

  ``plan`` performs every check (keys, shapes, dtypes, ranks, config) and raises
  :class:`~adapterhub.errors.IncompatibleAdapterError` without touching anything;
  ``apply`` only copies into tensors prepared by ``plan``, so a swap that fails
  validation leaves the previous state and outputs exactly as they were.

Tensor key conventions in ``adapter.safetensors`` (so that the host, the PEFT
exporter and third parties agree):

* LoRA: ``"<module path>.lora_A"`` of shape ``(r, in_features)`` and
  ``"<module path>.lora_B"`` of shape ``(out_features, r)``, module path as in
  ``base.named_modules()`` (e.g. ``model.layers.0.self_attn.q_proj``); the scale
  ``alpha / r`` comes from the config, never baked into the weights.
* Prefix tuning: ``"prefix.key"`` and ``"prefix.value"``, each of shape
  ``(num_layers, num_key_value_heads, num_virtual_tokens, head_dim)`` — already past the
  reparameterization MLP, which is folded away before saving.
* Layer-selective: the selected base parameters under their own names
  (``model.layers.3.input_layernorm.weight``), full tensors, same dtype as the base.

**Training defaults (optional).** A method may declare ``training_defaults``, a
:class:`TrainingDefaults` (or a mapping with the same keys), with the settings it trains
well with: a LoRA update, a prefix and a full fine-tune want learning rates orders of
magnitude apart. ``adapterhub methods`` shows them, and the trainer uses them for every
setting the caller did not give (``--lr`` given explicitly always wins). The attribute is
deliberately *not* a member of the :class:`Method` Protocol: a third-party method written
before it existed keeps working and trains with the trainer's own defaults.
:func:`training_defaults_of` reads it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from adapterhub.errors import ConfigError
from adapterhub.protocols.capabilities import Capabilities, MethodKind

if TYPE_CHECKING:  # torch is imported lazily so plugin discovery and light commands stay fast
    import torch


class MethodConfig(BaseModel):
    """Base class of every method config: frozen, and unknown keys are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class TrainingDefaults:
    """A method's recommended training settings (``Method.training_defaults``; module docs).

    ``lr`` is the peak learning rate (AdamW, after warmup) for the method's default
    config; ``note`` says where the number comes from (shown by ``adapterhub methods``).
    """

    lr: float
    note: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"training default lr must be a positive number, got {self.lr!r}")

    def as_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def training_defaults_of(method: object) -> TrainingDefaults | None:
    """The method's :class:`TrainingDefaults`, or None when it declares none.

    A mapping (``{"lr": 1e-3}``) is accepted too; anything else, or a bad value, is a
    one-line :class:`~adapterhub.errors.ConfigError` naming the method.
    """
    raw = getattr(method, "training_defaults", None)
    if raw is None or isinstance(raw, TrainingDefaults):
        return raw
    name = getattr(method, "name", type(method).__name__)
    if isinstance(raw, Mapping):
        known = {f.name for f in fields(TrainingDefaults)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"method {name!r}: unknown training default {unknown[0]!r} (known: {', '.join(sorted(known))})")
        try:
            return TrainingDefaults(**raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"method {name!r}: bad training_defaults: {exc}") from None
    raise ConfigError(f"method {name!r}: training_defaults must be a TrainingDefaults or a mapping, got {type(raw).__name__}")


@runtime_checkable
class TrainableAdapter(Protocol):
    """An adapter attached to a base model for training or single-adapter inference."""

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Exactly the parameters the optimiser should update."""
        ...

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The tensors to store: detached, contiguous, on CPU, keyed as documented above."""
        ...

    def detach(self) -> None:
        """Remove the adapter; the base model's state is bit-identical to before attach."""
        ...


@dataclass
class SwapPlan:
    """A fully validated, ready-to-apply residency change (built by ``MethodRuntime.plan``).

    ``tensors`` are already converted to the base's dtype/device layout expected by
    ``apply``; ``nbytes`` is what residency will cost (for the pool's memory budget).
    """

    adapter_id: str
    method: str
    config: MethodConfig
    tensors: dict[str, torch.Tensor]
    nbytes: int
    extra: dict[str, Any] | None = None


@runtime_checkable
class MethodRuntime(Protocol):
    """Serving-side state of one method on one host's frozen base (see module docs)."""

    def plan(self, adapter_id: str, config: MethodConfig, tensors: Mapping[str, torch.Tensor]) -> SwapPlan:
        """Validate everything (keys, shapes, dtypes, config) and prepare; change nothing."""
        ...

    def apply(self, plan: SwapPlan) -> None:
        """Make the planned adapter resident. Only copies/appends; never fails validation."""
        ...

    def remove(self, adapter_id: str) -> None:
        """Drop a resident adapter (the host guarantees no request in flight uses it)."""
        ...

    def resident(self) -> Sequence[str]:
        """Ids of the adapters currently resident in this runtime."""
        ...

    def route(self, rows: Sequence[str | None], inputs: dict[str, Any]) -> AbstractContextManager[dict[str, Any]]:
        """Select an adapter per batch row for the forward passes inside the context.

        ``rows[i]`` is the adapter id for row ``i`` (``None``: no adapter of this method).
        Gets the model-call kwargs (``input_ids``, ``attention_mask``, ...) and yields
        the kwargs to use (prefix tuning adds past key/values and widens the mask).
        On exit the base behaves as if no adapter were selected.
        """
        ...


@runtime_checkable
class StagingRuntime(Protocol):
    """Optional extra of a :class:`MethodRuntime`: copy ahead of ``apply``, invisibly.

    The host loads an adapter's bytes, hashes them on a helper thread and meanwhile
    plans; a runtime with ``stage`` can also copy the planned weights into storage that
    no request reads yet, so that copy overlaps the hash too. ``apply`` then only
    publishes what was staged. If the digest check (or anything else) fails, the host
    calls ``unstage``; outputs never change before ``apply``.
    """

    def stage(self, plan: SwapPlan) -> None:
        """Copy the plan's weights into storage no request can see (or do nothing)."""
        ...

    def unstage(self, plan: SwapPlan) -> None:
        """Release what ``stage`` took for ``plan`` (no-op if nothing, or once applied)."""
        ...


@dataclass(frozen=True)
class TokenSpan:
    """A contiguous run ``[start, stop)`` of a packed forward's tokens on one adapter.

    ``adapter_id`` is the adapter these tokens are served by (None: none of this
    runtime's). Spans of one forward are disjoint and sorted by ``start``; tokens no span
    covers belong to no adapter of this runtime.
    """

    adapter_id: str | None
    start: int
    stop: int


@runtime_checkable
class PackedRuntime(Protocol):
    """Optional extra of a :class:`MethodRuntime`: serve packed forwards (module docs).

    A packed forward's inputs have batch size 1: ``input_ids`` ``(1, T)`` hold the tokens
    of several requests, each request's tokens contiguous, and ``position_ids`` ``(1, T)``
    each token's position *in its own request*. The engine builds the attention (each
    token sees its own request's cache only); the runtime selects adapters per token.
    """

    def route_tokens(self, spans: Sequence[TokenSpan], inputs: dict[str, Any]) -> AbstractContextManager[dict[str, Any]]:
        """Select an adapter per token span for the forward inside the context.

        Yields the kwargs to use; a packed runtime must not add a cache or widen the
        mask (what a request's cache starts with comes from :meth:`initial_kv`). On exit
        the base behaves as if no adapter were selected. A runtime that can only serve
        one adapter per forward (a selective method rewrites base weights) raises
        :class:`~adapterhub.errors.IncompatibleAdapterError` for spans on two adapters;
        the engine never sends it such a forward.
        """
        ...

    def initial_kv(self, adapter_id: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Keys and values ``(layers, kv_heads, tokens, head_dim)`` that a request on this
        adapter has in its cache before its first token, or None.

        The request's own tokens then take positions ``tokens, tokens + 1, ...`` (as
        prefix tuning's ``route`` places them). The tensors are read, never written.
        """
        ...


@runtime_checkable
class Method(Protocol):
    """A PEFT method plugin (LoRA, prefix tuning, layer-selective, full, third-party)."""

    name: str
    kind: MethodKind
    description: str
    config_cls: type[MethodConfig]
    capabilities: Capabilities

    def attach(self, model: torch.nn.Module, config: MethodConfig) -> TrainableAdapter:
        """Freeze the base and inject freshly initialised trainable adapter parameters."""
        ...

    def validate(self, model: torch.nn.Module, config: MethodConfig, tensors: Mapping[str, torch.Tensor]) -> None:
        """Raise IncompatibleAdapterError if ``tensors`` cannot load onto ``model``."""
        ...

    def load(self, model: torch.nn.Module, config: MethodConfig, tensors: Mapping[str, torch.Tensor]) -> TrainableAdapter:
        """``validate`` then attach with the given weights (for inference or resuming)."""
        ...

    def runtime(self, model: torch.nn.Module) -> MethodRuntime:
        """Serving-side runtime on ``model`` (raise NotImplementedError if not hot_swap)."""
        ...


def iter_named_linears(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Linear]]:
    """All ``nn.Linear`` modules with their dotted paths (shared by method plugins)."""
    import torch

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            yield name, module
