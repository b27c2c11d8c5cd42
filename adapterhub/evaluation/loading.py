"""Turning ``--base`` and ``--adapter`` into generators the harness can use.

An adapter is given as a directory or a registry reference (``name@version``, a tag, or
a bare name for ``latest``; pulled through :class:`adapterhub.registry.client.Registry`).
Hot-swappable adapters (LoRA, prefix tuning, layer-selective) are served by an
:class:`~adapterhub.host.AdapterHost` on the one loaded base. Others (a full fine-tune)
are loaded with their method's ``load`` into a private copy of the base and generated
from with plain ``model.generate``.

Order matters and :class:`EvalModels` enforces it: the base fingerprint is computed
(and checked against the adapter's manifest) first, on the untouched base; a copy of the
base for model-aware evaluators (perplexity under the adapter) is taken before the host
wraps the base's modules for hot-swapping.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapterhub.errors import ConfigError, EvaluationError
from adapterhub.evaluation.generation import HostGenerator, ModelGenerator
from adapterhub.protocols.evaluator import EvaluatorContext

if TYPE_CHECKING:
    from adapterhub.manifest import Manifest
    from adapterhub.protocols.basemodel import LoadedBase

ADAPTER_SLOT = "eval-adapter"


@dataclass
class AdapterSource:
    """Where an adapter came from: a local directory, and its registry ref if pulled."""

    directory: Path
    manifest: Manifest
    ref: str | None = None
    """``name@version`` when the adapter is a published registry version."""

    @property
    def label(self) -> str:
        return self.ref or f"{self.manifest.name} ({self.directory})"

    @property
    def template(self) -> str | None:
        """The prompt template the adapter was trained with (trainer provenance)."""
        value = self.manifest.provenance.hyperparameters.get("template")
        return value if isinstance(value, str) else None


def resolve_adapter(spec: str | Path, registry_url: str | None = None) -> AdapterSource:
    """A directory as is; anything else is pulled from the registry (verified)."""
    from adapterhub.manifest import read_manifest

    text = str(spec)
    if not text.strip() or "\x00" in text:
        raise EvaluationError(f"invalid adapter reference {text!r}: empty or contains NUL")
    path = Path(spec)
    try:
        is_dir, exists = path.is_dir(), path.exists()
    except OSError:  # e.g. a 300-character ref: not a path; the ref parser judges it
        is_dir = exists = False
    if is_dir:
        return AdapterSource(directory=path, manifest=read_manifest(path))
    if exists:
        raise EvaluationError(f"{path}: not an adapter directory")
    from adapterhub.registry.client import Registry

    ref, directory = Registry(registry_url).fetch(str(spec))
    return AdapterSource(directory=Path(directory), manifest=read_manifest(directory), ref=ref)


def load_base_model(spec: str, device: str | None = None) -> LoadedBase:
    import torch

    from adapterhub.basemodels import load_base

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_base(spec, dtype=torch.float32, device=dev)


class EvalModels:
    """One loaded base and optionally one adapter, handing out generators in a safe order."""

    def __init__(
        self,
        base: LoadedBase,
        adapter: AdapterSource | None = None,
        *,
        batch_size: int = 8,
        template: str | None = None,
        owns_base: bool = True,
    ) -> None:
        from adapterhub.fingerprint import check_compatible, fingerprint

        self.base = base
        self.owns_base = owns_base
        """False: the base belongs to the caller, so the host serves a copy of it."""
        self.adapter = adapter
        self.batch_size = batch_size
        self.template = template or (adapter.template if adapter else None)
        self.fingerprint = fingerprint(base.model, base.name)  # on the untouched base
        if adapter is not None:
            check_compatible(adapter.manifest.base, self.fingerprint, f"adapter {adapter.label}")
        self._host: Any = None
        self._adapted_copy: Any = None
        self._adapted_generator: Any = None

    # --- the base ------------------------------------------------------------------------
    def base_generator(self) -> ModelGenerator:
        if self._host is not None and self.owns_base:
            raise EvaluationError("internal: evaluate the base before the adapter host wraps it")
        return ModelGenerator(self.base.model, self.base.tokenizer, template=self.template, batch_size=self.batch_size)

    # --- the adapter ------------------------------------------------------------------------
    def _method_and_config(self) -> tuple[Any, Any]:
        from adapterhub.catalog import get_catalog

        assert self.adapter is not None
        method = get_catalog().method(self.adapter.manifest.method)
        fields = dict(self.adapter.manifest.method_config)
        # A full fine-tune loaded into a throw-away copy needs no restorable snapshot of
        # the base (that would cost one more base's worth of memory).
        if "restorable" in method.config_cls.model_fields:
            fields["restorable"] = False
        try:
            config = method.config_cls.model_validate(fields)
        except Exception as exc:  # pydantic ValidationError → one line
            raise ConfigError(f"{self.adapter.directory}: invalid {method.name} config in manifest: {exc}".splitlines()[0]) from None
        return method, config

    def adapted_model(self) -> Any:
        """A private copy of the base with the adapter loaded by its method (cached)."""
        if self.adapter is None:
            raise EvaluationError("no adapter given")
        if self._adapted_copy is None:
            if self._host is not None and self.owns_base:
                raise EvaluationError("internal: take the adapted copy before the adapter host wraps the base")
            from adapterhub.artifact import read_adapter

            method, config = self._method_and_config()
            _, tensors = read_adapter(self.adapter.directory)
            model = copy.deepcopy(self.base.model)
            method.load(model, config, tensors)
            model.eval()
            self._adapted_copy = model
        return self._adapted_copy

    def release_adapted_model(self) -> None:
        """Drop the private copy (unless generation itself runs on it)."""
        if not isinstance(self._adapted_generator, ModelGenerator):
            self._adapted_copy = None

    def adapted_generator(self, *, with_model_context: bool = False) -> Any:
        """Generator for base + adapter; ``with_model_context`` also serves perplexity."""
        if self.adapter is None:
            raise EvaluationError("no adapter given")
        if self._adapted_generator is not None:
            return self._adapted_generator
        method, _ = self._method_and_config()
        if not method.capabilities.hot_swap:
            model = self.adapted_model()
            gen: Any = ModelGenerator(model, self.base.tokenizer, template=self.template, batch_size=self.batch_size)
        else:
            factory = None
            if with_model_context:
                model = self.adapted_model()  # copied before the host wraps the base
                tok = self.base.tokenizer

                def factory(formatted: Sequence[str]) -> EvaluatorContext:
                    return EvaluatorContext(model=model, tokenizer=tok, prompts=list(formatted))

            from adapterhub.host import AdapterHost
            from adapterhub.protocols.basemodel import LoadedBase

            served = self.base
            if not self.owns_base:
                # The host wraps modules for hot-swapping and sets the tokenizer's padding
                # side: do that to a copy, never to a model the caller keeps using.
                served = LoadedBase(self.base.name, copy.deepcopy(self.base.model), copy.deepcopy(self.base.tokenizer), self.base.path)
            param = next(served.model.parameters())
            self._host = AdapterHost(served, device=str(param.device), dtype=param.dtype)
            self._host.load(self.adapter.directory, name=ADAPTER_SLOT)
            gen = HostGenerator(
                self._host, ADAPTER_SLOT, template=self.template, batch_size=self.batch_size, context_factory=factory
            )
        self._adapted_generator = gen
        return gen
